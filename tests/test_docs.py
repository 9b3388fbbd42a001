"""README.md and docs/*.md against the repository: the front page's length, every relative link and image, every
``python -m MODULE`` / ``python SCRIPT.py`` / ``torchrun ... SCRIPT.py`` in a code block, every ``make TARGET``, and
every repository path named in inline code or a code block (``tests/utils/test_x.py``, ``networks/smp/``).

Nothing is trained or run: modules are looked up with ``importlib.util.find_spec`` (which imports only their parent
packages), scripts and link targets are checked on disk, make targets are read from the Makefile. Every failure names
the file and line.
"""
from __future__ import annotations

import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from datasets.moved import MOVED

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOC_FILES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 220

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = ("http://", "https://", "mailto:", "ftp://")


@dataclass(frozen=True)
class Line:
    """One line of a documentation file: where it is, its text, and whether it lies in a fenced code block."""

    path: Path
    number: int
    text: str
    in_code: bool

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.number}"


def read_lines(path: Path) -> list[Line]:
    """The lines of ``path``; fence lines themselves count as code."""
    lines, in_code = [], False
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(text):
            lines.append(Line(path, number, text, True))
            in_code = not in_code
            continue
        lines.append(Line(path, number, text, in_code))
    return lines


def code_commands(path: Path) -> list[tuple[Line, str]]:
    """The command lines of the fenced code blocks of ``path`` (backslash continuations joined), each with its
    first line."""
    commands, pending, start = [], "", None
    for line in read_lines(path):
        if not line.in_code or FENCE.match(line.text):
            if pending:
                commands.append((start, pending))
            pending, start = "", None
            continue
        text = line.text.rstrip()
        if start is None:
            start = line
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        commands.append((start, pending + text))
        pending, start = "", None
    if pending:
        commands.append((start, pending))
    return commands


def shell_words(text: str) -> list[str]:
    """``text`` split as a shell would, without its trailing comment (lenient with unbalanced quotes)."""
    try:
        return shlex.split(text, comments=True)
    except ValueError:
        return text.split("#", 1)[0].split()


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markdown marks and punctuation dropped, lower case, spaces -> hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of every heading of ``path`` (outside code blocks), duplicates numbered as GitHub does."""
    seen: dict[str, int] = {}
    result = set()
    for line in read_lines(path):
        match = None if line.in_code else HEADING.match(line.text)
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def paragraphs(path: Path) -> list[list[Line]]:
    """The runs of consecutive prose lines of ``path`` (outside code blocks, split at blank lines): an inline code
    span may continue on the next line of its paragraph."""
    result: list[list[Line]] = [[]]
    for line in read_lines(path):
        if line.in_code or not line.text.strip():
            result.append([])
        else:
            result[-1].append(line)
    return [lines for lines in result if lines]


def inline_code(path: Path) -> list[tuple[Line, str, list[str]]]:
    """Per prose line: the line, its text with inline code spans blanked out, and the spans that start on it."""
    found = []
    for lines in paragraphs(path):
        text = "\n".join(line.text for line in lines)
        starts = [0]
        for line in lines[:-1]:
            starts.append(starts[-1] + len(line.text) + 1)
        spans: dict[int, list[str]] = {index: [] for index in range(len(lines))}
        for match in INLINE_CODE.finditer(text):
            index = max(i for i, start in enumerate(starts) if start <= match.start())
            spans[index].append(match.group(2).replace("\n", " "))
        blanked = INLINE_CODE.sub(lambda match: re.sub(r"[^\n]", " ", match.group(0)), text).split("\n")
        found += [(line, blanked[index], spans[index]) for index, line in enumerate(lines)]
    return found


def links(path: Path) -> list[tuple[Line, str]]:
    """Markdown links and images outside code (blocks and inline code spans), with their lines."""
    return [(line, match.group(1)) for line, prose, _ in inline_code(path) for match in LINK.finditer(prose)]


def make_targets() -> set[str]:
    """The explicit targets of the Makefile (rules and .PHONY entries; variable assignments and pattern rules
    left out)."""
    targets = set()
    for text in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines():
        if text.startswith(("\t", "#")) or not text.strip():
            continue
        match = re.match(r"^([^:=#]+?)\s*::?(?![=])(.*)$", text)
        if match is None:
            continue
        names, rest = match.group(1).split(), match.group(2)
        if names == [".PHONY"]:
            targets.update(rest.split())
        else:
            targets.update(name for name in names if "$" not in name and "%" not in name)
    return targets


# Top-level names that runs and users create (not part of the repository): paths under them are examples.
GENERATED = {"data", "runs", "pretrained_pth", "lists", "predictions", "build", "dist", "venv", "__pycache__"}
# Files that moved, named on purpose where the docs say where they went (docs/extending.md#old-module-paths).
FORMER_PATHS = {"utils/context.py", "utils/predict.py", "utils/protocol.py"}
PATH_WORD = re.compile(r"[\w.\-/]+")


def repository_top() -> set[str]:
    """The names at the repository's top level (hidden and generated ones left out)."""
    return {entry.name for entry in ROOT.iterdir() if not entry.name.startswith(".") and entry.name not in GENERATED}


def path_words(text: str, top: set[str]) -> list[str]:
    """The words of ``text`` that name a repository path: under a top-level folder (``tests/utils/x.py``,
    ``networks/smp/``) or a top-level file (``requirements.txt``); templates (``<set>``, ``{a,b}``, ``*``) and
    ``path::test`` / ``path:line`` suffixes are left out."""
    found = []
    for word in text.split():
        word = re.sub(r":\d+$", "", word.strip("'\"(),;:`").split("::")[0])
        if any(mark in word for mark in "<>{}*$[]") or "..." in word or not PATH_WORD.fullmatch(word):
            continue
        first = word.split("/")[0]
        if first in top and ("/" in word or (first == word and "." in word)):
            found.append(word)
    return found


def repository_paths(path: Path) -> list[tuple[Line, str]]:
    """Every repository path named in an inline code span or a code block of ``path``, with its line."""
    top = repository_top()
    texts = [(line, line.text.split(" #")[0]) for line in read_lines(path)  # a comment in a code block: prose
             if line.in_code and not FENCE.match(line.text)]
    texts += [(line, span) for line, _, spans in inline_code(path) for span in spans]
    return [(line, word) for line, text in texts for word in path_words(text, top)]


SEPARATORS = ("&&", "||", ";", "|")
PYTHON_WORD = re.compile(r"^(?:\S*/)?python(?:3(?:\.\d+)?)?$")


def segments(text: str) -> list[list[str]]:
    """The words of each simple command of a shell line (comments dropped; split at && || ; |)."""
    result: list[list[str]] = [[]]
    for word in shell_words(text):
        if word in SEPARATORS:
            result.append([])
        else:
            result[-1].append(word)
    return [words for words in result if words]


def make_mentions(path: Path) -> list[tuple[Line, str]]:
    """Every ``make TARGET`` in a code block or an inline code span of ``path``, with its line."""
    texts = [(line, line.text) for line in read_lines(path) if line.in_code and not FENCE.match(line.text)]
    texts += [(line, span) for line, _, spans in inline_code(path) for span in spans]
    found = []
    for line, text in texts:
        for words in segments(text):
            if "make" not in words:
                continue
            for word in words[words.index("make") + 1:]:
                if not word.startswith("-") and "=" not in word:
                    found.append((line, word))
    return found


def invocations(command: str) -> list[tuple[str, str]]:
    """("module", NAME) for ``python -m NAME`` and ("script", PATH) for ``python PATH.py`` / ``torchrun ... PATH.py``
    in one command line (several commands joined by ``&&`` / ``;`` / ``|`` each count)."""
    found = []
    for words in segments(command):
        start = next((index for index, word in enumerate(words) if PYTHON_WORD.match(word)), None)
        if start is not None:
            arguments = words[start + 1:]
            for index, word in enumerate(arguments):
                if word == "-m" and index + 1 < len(arguments):
                    found.append(("module", arguments[index + 1]))
                    break
                if word == "-c":
                    break
                if word.startswith("-"):
                    continue
                if word.endswith(".py"):
                    found.append(("script", word))
                break
        if "torchrun" in words:
            script = next((word for word in words[words.index("torchrun") + 1:] if word.endswith(".py")), None)
            if script is not None:
                found.append(("script", script))
    return found


def test_there_are_documentation_pages():
    assert README.is_file()
    assert len(DOC_FILES) > 1, "docs/*.md: no documentation pages"


def test_readme_is_a_front_page():
    count = len(README.read_text(encoding="utf-8").splitlines())
    assert count <= MAX_README_LINES, f"README.md: {count} lines, at most {MAX_README_LINES} (move detail to docs/)"


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_resolve(path):
    problems = []
    for line, target in links(path):
        if target.startswith(EXTERNAL):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = path if not file_part else (path.parent / file_part).resolve()
        if not resolved.exists():
            problems.append(f"{line.where()}: link target {target!r} does not exist ({resolved})")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{line.where()}: link {target!r}: no heading with anchor #{anchor} in "
                            f"{resolved.relative_to(ROOT)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_commands_in_code_blocks_name_existing_modules_and_scripts(path):
    problems = []
    for line, command in code_commands(path):
        for kind, name in invocations(command):
            if kind == "module":
                if name in MOVED:
                    problems.append(f"{line.where()}: `python -m {name}` is an old module path; it is now "
                                    f"{MOVED[name]}")
                    continue
                try:
                    spec = importlib.util.find_spec(name)
                except (ImportError, ValueError) as exc:
                    spec, reason = None, f"{type(exc).__name__}: {exc}"
                else:
                    reason = "not found"
                if spec is None:
                    problems.append(f"{line.where()}: `python -m {name}`: module {reason}")
            elif not (ROOT / name).is_file():
                problems.append(f"{line.where()}: script {name} does not exist")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_make_targets_exist(path):
    targets = make_targets()
    problems = [f"{line.where()}: `make {target}`: no such target in the Makefile ({', '.join(sorted(targets))})"
                for line, target in make_mentions(path) if target not in targets]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_repository_paths_named_in_code_exist(path):
    problems = [f"{line.where()}: `{name}` does not exist in the repository" for line, name in repository_paths(path)
                if not (ROOT / name).exists() and not (name in FORMER_PATHS and path.name == "extending.md")]
    assert not problems, "\n".join(problems)


def test_former_paths_are_gone():
    assert not [name for name in FORMER_PATHS if (ROOT / name).exists()]


# ----- the checks themselves, on made-up text ------------------------------------------------------------------------
def test_slug_follows_github():
    assert slug("Results tables: protocol.py") == "results-tables-protocolpy"
    assert slug("UniverSeg's released weights") == "universegs-released-weights"
    assert slug("Several GPUs (torchrun)") == "several-gpus-torchrun"
    assert slug("Release fidelity: `--fidelity paper|release`") == "release-fidelity---fidelity-paperrelease"


def test_invocations_are_found():
    assert invocations("python -m datasets.phantoms --dataset busi --out x  # a comment") == \
        [("module", "datasets.phantoms")]
    assert invocations("/usr/bin/time -v .venv/bin/python train.py --model unet") == [("script", "train.py")]
    assert invocations("torchrun --nnodes 2 --nproc_per_node 8 train_synapse.py --batch_size 32") == \
        [("script", "train_synapse.py")]
    assert invocations("make venv && python predict.py --help") == [("script", "predict.py")]
    assert invocations("python -c 'import x'") == []


def test_checks_catch_bad_documents(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [bad](#nowhere) `a[i](x)`\n\n```bash\n# Not a heading\n"
                    "python -m datasets.phantom --out x \\\n    --dataset busi\nmake nosuchtarget\n```\n",
                    encoding="utf-8")
    assert anchors(page) == {"title"}
    assert [target for _, target in links(page)] == ["#title", "#nowhere"]
    commands = code_commands(page)
    assert [(line.number, invocations(text)) for line, text in commands if invocations(text)] == \
        [(7, [("module", "datasets.phantom")])]
    assert "datasets.phantom" in MOVED
    assert [target for _, target in make_mentions(page)] == ["nosuchtarget"]
    wrapped = tmp_path / "wrapped.md"
    wrapped.write_text("A span `torchrun ...\nSCRIPT.py` over two lines; then `make\nnowhere` and [x](gone.md).\n",
                       encoding="utf-8")
    assert [(line.number, target) for line, target in make_mentions(wrapped)] == [(2, "nowhere")]
    assert [(line.number, target) for line, target in links(wrapped)] == [(3, "gone.md")]
    assert "nosuchtarget" not in make_targets() and {"demo", "test", "demo-matchseg"} <= make_targets()
    paths = tmp_path / "paths.md"
    paths.write_text("See `tests/test_gone.py::test_x`, `utils/cli.py:12`, `datasets/<set>.py`, `runs/x/last.pth`\n"
                     "and `requirements.txt`.\n\n```bash\n"
                     "pytest tests/utils/test_nope.py  # `tests/in_comment.py`\n```\n", encoding="utf-8")
    assert [(line.number, name) for line, name in repository_paths(paths)] == \
        [(5, "tests/utils/test_nope.py"), (1, "tests/test_gone.py"), (1, "utils/cli.py"), (2, "requirements.txt")]


def test_licence_and_citation_agree():
    """LICENSE is the Apache-2.0 text that README and CITATION.cff name; CITATION.cff parses and cites both papers,
    whose BibTeX entries in the README are complete (balanced braces, one key each)."""
    import yaml

    assert (ROOT / "LICENSE").read_text(encoding="utf-8").split()[:4] == ["Apache", "License", "Version", "2.0,"]
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "Apache-2.0" and citation["authors"]
    titles = {reference["title"] for reference in citation["references"]}
    assert titles == {"Similarity Memory Prior is All You Need for Medical Image Segmentation",
                      "MatchSeg: Towards Better Segmentation via Reference Image Matching"}
    readme = README.read_text(encoding="utf-8")
    bibtex = readme.split("```bibtex\n", 1)[1].split("```", 1)[0]
    entries = re.findall(r"@(\w+)\{([\w-]+),(.*?)\n\}", bibtex, re.DOTALL)
    assert [kind for kind, _, _ in entries] == ["inproceedings", "article", "software"]
    assert all(body.count("{") == body.count("}") for _, _, body in entries)
    assert "ICCV" in entries[0][2] and "2025" in entries[0][2] and "2403.15901" in entries[1][2]
    assert "Apache License 2.0" in readme and "(LICENSE)" in readme
