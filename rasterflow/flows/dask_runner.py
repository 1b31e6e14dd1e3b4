"""The Dask task runner, carrying the client's config to every worker.

Tasks read the config of the call that runs them (``current_config()``):
storage options for their URIs, and so credentials. In the client process a
context variable holds it. Dask workers are other processes, often on other
machines, started before the call and shared by many callers, so neither the
context variable nor the client's environment reaches them, and a config file
on each worker would be one config for every caller.

Prefect ships the flow, with its task runner, along with every task it sends
to Dask, and enters a duplicate of that runner around the task run on the
worker (``prefect.context.hydrated_context``). This runner holds the config and
activates it there, so each task sees exactly the config of the call that
submitted it, whatever runs on the same worker. The config travels in the task
payload over Dask's comms (use TLS on an untrusted network); it is never a flow
or task parameter, so it never reaches the Prefect database.
"""

from __future__ import annotations

from typing import Any

from prefect_dask import DaskTaskRunner

from ..config import RasterflowConfig, using_config


class ConfiguredDaskTaskRunner(DaskTaskRunner):
    def __init__(self, config: RasterflowConfig, **kwargs: Any):
        super().__init__(**kwargs)
        self.config = config

    def duplicate(self) -> ConfiguredDaskTaskRunner:
        return type(self)(
            self.config,
            address=self.address,
            cluster_class=self.cluster_class,
            cluster_kwargs=self.cluster_kwargs,
            adapt_kwargs=self.adapt_kwargs,
            client_kwargs=self.client_kwargs,
            performance_report_path=self.performance_report_path,
        )

    def __enter__(self) -> ConfiguredDaskTaskRunner:
        super().__enter__()
        self._exit_stack.enter_context(using_config(self.config))
        return self
