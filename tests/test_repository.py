"""Repository contracts: CI runs the README's test command."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / 'README.md').read_text()
    section = readme.split('## Run the tests', 1)[1]
    command = re.search(r'```bash\n(.+?)\n```', section, re.S).group(1).strip()
    ci_lines = [line.strip() for line in (ROOT / '.ci' / 'run').read_text().splitlines()]
    assert command in ci_lines
