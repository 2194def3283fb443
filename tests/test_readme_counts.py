"""What README.md and the docs say about the shipped configs is what the configs do (issue 28): every trial and
fine-tune count they state is the grid the project's own search-space code builds from that config, and the
files docs/extending.md says a DropLayers pass touches are the ones that name it.

Where each statement lives: the main job's trial count at the top of README.md (and of docs/getting-started.md),
the "Configs shipped" table in docs/getting-started.md, the Python API example in docs/commands.md, the PyTorch
reference row's sentence in docs/concepts.md, the DropLayers sentence in docs/extending.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from autotune.config.loader import parse_config, read_source
from autotune.config.schema import RunConfig
from autotune.config_checks import pass_aliases
from autotune.plan import build_plan
from autotune.search.sampling import grid_points

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
GETTING_STARTED = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
COMMANDS = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
CONCEPTS = (ROOT / "docs" / "concepts.md").read_text(encoding="utf-8")
EXTENDING = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
MAIN = "configs/smollm2_tone.yaml"
FINE_TUNES = {"LoRA", "QLoRA"}


def config(path: str) -> RunConfig:
    raw, base = read_source(ROOT / path)
    return parse_config(raw, base, pass_aliases=pass_aliases)[0]


def grid(cfg: RunConfig) -> list[dict[str, object]]:
    return grid_points(build_plan(cfg))


def fine_tunes(cfg: RunConfig) -> int:
    """Distinct fine-tunes of the grid: its points cut to the passes up to the last LoRA/QLoRA (the cache shares the rest)."""
    names = list(cfg.passes)
    last = max(i for i, (_, p) in enumerate(cfg.passes.items()) if {p.type, *(o.type for o in p.alternatives)} & FINE_TUNES)
    before = names[: last + 1]
    cut = {tuple(sorted((k, str(v)) for k, v in point.items() if k.split(".")[0] in before)) for point in grid(cfg)}
    return len(cut)


def configs_table() -> dict[str, str]:
    """The "Configs shipped" table (docs/getting-started.md): config path -> its description."""
    section = GETTING_STARTED.split("## Configs shipped", 1)[1].split("\n\n", 2)[1]
    return dict(re.findall(r"^\| `(configs/[^`]+)` \| (.*) \|$", section, re.M))


def stated(text: str, what: str) -> int | None:
    found = re.findall(rf"(\d+) {what}\b", text)
    assert len(found) <= 1, f"two {what} counts in {text!r}"
    return int(found[0]) if found else None


@pytest.mark.parametrize("path", [p for p, text in configs_table().items() if stated(text, "trials") or stated(text, "fine-tunes")])
def test_the_configs_table_counts_are_the_configs_grids(path: str) -> None:
    text, cfg = configs_table()[path], config(path)
    trials = stated(text, "trials")
    if trials is not None:
        assert len(grid(cfg)) == trials, f"docs/getting-started.md says {path} runs {trials} trials"
        assert cfg.engine.search_strategy is not None and cfg.engine.search_strategy.max_samples in (None, trials)
    if stated(text, "fine-tunes") is not None:
        assert fine_tunes(cfg) == stated(text, "fine-tunes"), f"docs/getting-started.md: {text}"


def test_the_main_job_counts_and_the_api_example_match_the_main_config() -> None:
    cfg = config(MAIN)
    size = len(grid(cfg))
    assert MAIN in configs_table() and stated(configs_table()[MAIN], "trials") == size
    for page, text in (("README.md", README), ("docs/getting-started.md", GETTING_STARTED)):
        top = re.search(r"Run the main job \(an? (\d+)-trial search study", text)
        assert top is not None and int(top.group(1)) == size, page
    api = re.search(r'autotune\.run\("(configs/[^"]+)", n_trials=(\d+)\)', COMMANDS)
    assert api is not None and api.group(1) == MAIN and int(api.group(2)) == size
    # The PyTorch eager reference row: the docs say the main job turns it off exactly when its config does.
    assert ("the main job turns it off" in CONCEPTS) == (not cfg.engine.pytorch_reference)


def test_the_files_a_drop_layers_pass_touches_are_the_ones_the_docs_name() -> None:
    sentence = re.search(r"`DropLayers` touches (\d+) files: (.*?) \|\n", EXTENDING, re.S)
    assert sentence is not None
    named = set(re.findall(r"`([\w/]+\.py)`", sentence.group(2)))
    package = ROOT / "autotune"
    touching = {str(p.relative_to(package)) for p in package.rglob("*.py")
                if re.search(r"DropLayers|drop_layers|dropped_layers", p.read_text(encoding="utf-8"))}
    assert named == touching and int(sentence.group(1)) == len(touching)
