"""Write deployments/prefect.yaml and infra/job-templates/ from rasterflow/deploy.py.

The code is the source of truth (``rasterflow deploy`` uses it); these files
are its reviewable, diffable form for platform engineers, and a test fails when
they drift. Run after changing deploy.py, RuntimeEnum sizes or a flow signature:

    python scripts/export_deployment_files.py
"""

from __future__ import annotations

import json
from pathlib import Path

from rasterflow.config import RasterflowConfig
from rasterflow.deploy import POOL_TYPES, job_template, render_prefect_yaml
from rasterflow.enums import RuntimeEnum

ROOT = Path(__file__).resolve().parents[1]


def expected_files() -> dict[Path, str]:
    files = {ROOT / "deployments" / "prefect.yaml": render_prefect_yaml(RasterflowConfig())}
    for pool_type in POOL_TYPES:
        for runtime in RuntimeEnum:
            path = ROOT / "infra" / "job-templates" / pool_type / f"{runtime.value}.json"
            files[path] = json.dumps(job_template(pool_type, runtime), indent=2, sort_keys=True) + "\n"
    return files


def main() -> None:
    for path, text in expected_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
