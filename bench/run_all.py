"""Runs every benchmark script in this folder (bench/<id>_*.py) in order; each prints its own ratio lines."""
import pathlib
import subprocess
import sys

here = pathlib.Path(__file__).resolve().parent
failed = []
for script in sorted(here.glob("[a-z][0-9]_*.py")):
    print(f"== {script.name}", flush=True)
    if subprocess.call([sys.executable, str(script)], cwd=here.parent) != 0:
        failed.append(script.name)
if failed:
    print("failed:", ", ".join(failed))
    sys.exit(1)
