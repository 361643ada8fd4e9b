"""The README's first two commands are the project's contract; CI must run the second."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_starts_with_setup_and_test_commands():
    setup, test = readme_commands()[:2]
    assert "pip install" in setup and "cnnlab train" in setup
    assert "pip install" in test and "pytest" in test


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci_lines[-1] == readme_commands()[1]


def test_the_zoo_tables_years_are_the_registrys():
    """Each family row of the README's zoo table, "| Family (year) | `name` ... |", names models the
    registry dates to that year (a row "(2015/16)" allows either)."""
    from cnnlab.models import model_spec

    rows = re.findall(r"^\| ([^|(]+?) \(([\d/]+)\) \| (.*) \|$", (ROOT / "README.md").read_text(), re.M)
    assert len(rows) >= 9  # LeNet, AlexNet, ZFNet, VGG, NiN, GoogLeNet, ResNet, CIFAR ResNet, DenseNet
    for family, years, names in rows:
        allowed = {int(years[:4]), *(int(years[:2] + y) for y in years.split("/")[1:])}
        for name in re.findall(r"`([a-z]\w*)`", names):
            assert model_spec(name).year in allowed, (family, name, model_spec(name).year, years)
