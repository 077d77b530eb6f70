"""The toolkit's package: importing it loads none of the service."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_toolkit_loads_none_of_the_service() -> None:
    code = (
        "import sys, phonet_client; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'producer', 'websockets', 'pydantic', 'pydantic_settings', 'prometheus_client'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
