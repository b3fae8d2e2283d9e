"""The documentation is true to the tree: every relative link in README.md, ARCHITECTURE.md and
docs/*.md resolves (to a file, and to a heading when it names one), the README stays a front door
(at most 300 lines, every docs page reachable from it), and every module, path, function, class
and constant ARCHITECTURE.md names exists in the module its section is about.

Names are looked up with ast in the source files (nothing is imported), so the check is cheap
and sees names a module imports as well as the ones it defines.
"""
from __future__ import annotations

import ast
import builtins
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 300
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md")),
            ROOT / "quant" / "README.md", ROOT / "submission" / "README.md"]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a link inside a code block is not a link)."""
    out, in_code = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            in_code = not in_code
        elif not in_code:
            out.append(line)
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lstrip("#").strip())
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(text):
        if line.startswith("#"):
            s = slug(line)
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out


def links(path: Path) -> list[str]:
    found = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        line = re.sub(r"`[^`]*`", "", line)          # a link spelled in code is not a link
        found += [a or b for a, b in LINK.findall(line)]
    return found


def broken_links(path: Path) -> list[str]:
    """Each relative link of `path` whose file (or heading) does not exist, as 'target: why'."""
    bad = []
    for target in links(path):
        if re.match(r"^[a-z]+:", target):               # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            bad.append(f"{target}: no heading with that anchor in {dest.name}")
    return bad


# ----------------------------------------------------------------------------- the link checker
def test_slug_matches_githubs_rule():
    assert slug("## Rate–distortion (CPU)") == "ratedistortion-cpu"
    assert slug("### Data: `python -m golf.data.prepare`") == "data-python--m-golfdataprepare"
    assert slug("## The scaled cap (CPU presets)") == "the-scaled-cap-cpu-presets"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_broken_links_are_found(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "t.md").write_text("# Top\n## Part two\n")
    doc = tmp_path / "d.md"
    doc.write_text("[ok](sub/t.md) [ok](sub/t.md#part-two) [web](https://x.org/y) [here](#self)\n"
                   "# Self\n[gone](sub/none.md) [bad anchor](sub/t.md#part-three)\n"
                   "`[code](not/a/link.md)`\n```\n[fenced](nor/this.md)\n```\n")
    assert broken_links(doc) == ["sub/none.md: no such file",
                                 "sub/t.md#part-three: no heading with that anchor in t.md"]


# ----------------------------------------------------------------------------- the documents
@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    assert path.is_file()
    assert broken_links(path) == []


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; keep it a front door (at most {README_MAX_LINES}) "
        "and move measurements and long explanations to a page under docs/")


def test_every_docs_page_is_reachable_from_the_readme():
    todo, seen = [ROOT / "README.md"], set()
    while todo:
        page = todo.pop()
        if page in seen or page.suffix != ".md" or not page.is_file():
            continue
        seen.add(page)
        todo += [(page.parent / t.partition("#")[0]).resolve() for t in links(page)
                 if not re.match(r"^[a-z]+:", t) and t.partition("#")[0]]
    orphans = sorted(p.name for p in (ROOT / "docs").glob("*.md") if p.resolve() not in seen)
    assert not orphans, f"docs pages no link from README.md leads to: {orphans}"


# ----------------------------------------------------------------------------- ARCHITECTURE.md
@dataclass
class ModuleIndex:
    """What one source file makes available: top-level names (defined or imported) and, per
    class it defines, its members (methods, fields, attributes set on self)."""
    names: set[str] = field(default_factory=set)
    imported: set[str] = field(default_factory=set)
    classes: dict[str, set[str]] = field(default_factory=dict)
    bases: dict[str, list[str]] = field(default_factory=dict)
    strings: set[str] = field(default_factory=set)


def index_source(source: str) -> ModuleIndex:
    idx = ModuleIndex()
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            idx.names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            idx.names.update(t.id for tgt in targets for t in ast.walk(tgt) if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            new = {(a.asname or a.name).split(".")[0] for a in node.names}
            idx.names |= new
            idx.imported |= new
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            members = idx.classes.setdefault(node.name, set())
            idx.bases[node.name] = [b.id for b in node.bases if isinstance(b, ast.Name)]
            for item in ast.walk(node):
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
                elif isinstance(item, ast.Attribute) and isinstance(item.value, ast.Name) \
                        and item.value.id == "self" and isinstance(item.ctx, ast.Store):
                    members.add(item.attr)
                elif isinstance(item, ast.Assign):
                    members.update(t.id for t in item.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            idx.strings.add(node.value)
    return idx


@functools.lru_cache(maxsize=None)
def module_index(path: Path) -> ModuleIndex:
    return index_source(path.read_text(encoding="utf-8"))


def module_path(dotted: str) -> Path | None:
    base = ROOT.joinpath(*dotted.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


@functools.lru_cache(maxsize=None)
def all_classes() -> dict[str, set[str]]:
    """Class name -> members, over golf/ and quant/, bases' members included (by name)."""
    own: dict[str, set[str]] = {}
    bases: dict[str, list[str]] = {}
    for p in [*ROOT.glob("golf/**/*.py"), *ROOT.glob("quant/**/*.py")]:
        idx = module_index(p)
        for name, members in idx.classes.items():
            own.setdefault(name, set()).update(members)
            bases.setdefault(name, []).extend(idx.bases.get(name, []))

    def members(name: str, depth: int = 0) -> set[str]:
        out = set(own.get(name, ()))
        for b in bases.get(name, []) if depth < 8 else []:
            out |= members(b, depth + 1)
        return out
    return {n: members(n) for n in own}


def resolve_dotted(dotted: str) -> str | None:
    """Why `golf.x.y` / `quant.x.Y.z` does not exist, or None when it does."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        path = module_path(".".join(parts[:cut]))
        if path is not None:
            break
    else:
        return f"no module {parts[0]}"
    rest = parts[cut:]
    if not rest:
        return None
    idx = module_index(path)
    if rest[0] not in idx.names:
        return f"{'.'.join(parts[:cut])} has no {rest[0]}"
    if len(rest) > 1 and rest[1] not in all_classes().get(rest[0], set()):
        return f"{rest[0]} has no member {rest[1]}"
    return None


@dataclass
class Section:
    title: str
    modules: list[Path]          # the files whose names the section's backticks must exist in
    tokens: list[str]


SECTION_PATH = re.compile(r"\b((?:golf|quant)/[\w/]*(?:\.py)?)")


def section_modules(title: str) -> list[Path]:
    """The files a heading is about: each golf/... or quant/... path it names (a package =
    every file in it, sub-packages included)."""
    out: list[Path] = []
    for rel in SECTION_PATH.findall(title):
        p = ROOT / rel
        out += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return out


def sections(text: str) -> list[Section]:
    out: list[Section] = [Section("", [], [])]
    for line in text.splitlines():
        if line.startswith("#"):
            out.append(Section(line, section_modules(line), []))
        out[-1].tokens += re.findall(r"`([^`\n]+)`", line)
    return out


PATH_TOKEN = re.compile(r"^(?:golf|quant|tests|bench|submission|docs)/[\w./-]*$|^[\w-]+\.py$")
DOTTED = re.compile(r"\b((?:golf|quant)(?:\.[A-Za-z_]\w*)+)")
CALL = re.compile(r"^(class\s+)?(\.)?([A-Za-z_]\w*)(?:\.([A-Za-z_]\w*))?\s*(\(|=\s|$)")


def name_problems(tok: str, sec: Section) -> list[str]:
    """Problems with one backticked token of ARCHITECTURE.md (empty when it holds or is prose)."""
    probs = []
    if PATH_TOKEN.match(tok):
        hits = [ROOT / tok] if "/" in tok else [ROOT / tok, *ROOT.glob(f"golf/**/{tok}"),
                                                   *ROOT.glob(f"quant/**/{tok}")]
        if not any(h.exists() for h in hits):
            probs.append(f"path {tok} does not exist")
        return probs
    for dotted in DOTTED.findall(tok):
        why = resolve_dotted(dotted)
        if why:
            probs.append(f"{dotted}: {why}")
    m = CALL.match(tok)
    if DOTTED.search(tok) or not m or not sec.modules or re.match(r"^[A-Z][A-Z0-9_]*=\S", tok):
        return probs                                   # prose, a command, or VAR=value
    _, dot, head, attr, _ = m.groups()
    idxs = [module_index(p) for p in sec.modules]
    names = set().union(*(i.names for i in idxs)) | {p.stem for p in sec.modules}
    classes = all_classes()
    local_members = set().union(*(classes.get(c, set()) for i in idxs for c in i.classes))
    is_call = m.group(5) == "("
    if dot:                                            # `.method(...)`: a member of a class here
        if head not in local_members:
            probs.append(f".{head}: no class in {sec.title.strip()} has it")
    elif attr:                                         # `Class.member`, `module.name`, `var.member`
        stems = {p.stem: p for p in sec.modules}
        if head in classes or head in names and head[0].isupper():
            if attr not in classes.get(head, set()):
                probs.append(f"{head}.{attr}: {head} has no member {attr}")
        elif head in stems and attr in module_index(stems[head]).names:
            pass                                       # module.name
        elif head in set().union(*(i.imported for i in idxs)) - set(classes) - set(stems):
            pass                                       # a third-party module's name (nn.Linear)
        elif attr not in local_members:                # a variable: an instance of a class here
            probs.append(f"{head}.{attr}: neither a module nor a class in "
                         f"{sec.title.strip()} has {attr}")
    elif hasattr(builtins, head):
        pass
    elif is_call or head[0].isupper():
        strings = set().union(*(i.strings for i in idxs))
        if head not in names and head not in local_members and head not in strings:
            probs.append(f"{head}: not in {', '.join(str(p.relative_to(ROOT)) for p in sec.modules)}")
    return probs


def architecture_problems(text: str) -> list[str]:
    probs = []
    for sec in sections(text):
        for rel in SECTION_PATH.findall(sec.title):
            if not (ROOT / rel).exists():
                probs.append(f"heading {sec.title.strip()!r}: {rel} does not exist")
        for tok in sec.tokens:
            probs += name_problems(tok, sec)
    return probs


def test_the_name_checker_catches_what_it_should():
    doc = ("# x\n`golf/no_such.py` `golf.run.rundir.no_such` `quant.QuantizedModel.no_such` "
           "`golf.run.rundir.publish_pair` `quant/artifact.py`\n"
           "### golf/run/rundir.py\n`publish_pair(run_dir)` `gone_function(x)` `NO_SUCH_CONST` "
           "`RUN_FILES` `class Missing(ValueError)` `PRESET=cpu` `a few words`\n"
           "### golf/model/gpt.py\n`GPT.hessian_modules()` `GPT.no_method()` `.forward(x)` "
           "`cfg.xsa_layers()` `ModelConfig`\n"
           "### golf/nope.py\n")
    assert architecture_problems(doc) == [
        "path golf/no_such.py does not exist",
        "golf.run.rundir.no_such: golf.run.rundir has no no_such",
        "quant.QuantizedModel.no_such: QuantizedModel has no member no_such",
        "gone_function: not in golf/run/rundir.py",
        "NO_SUCH_CONST: not in golf/run/rundir.py",
        "Missing: not in golf/run/rundir.py",
        "GPT.no_method: GPT has no member no_method",
        "heading '### golf/nope.py': golf/nope.py does not exist",
    ]


def test_architecture_names_exist():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    assert architecture_problems(text) == []


def test_architecture_names_every_module_of_golf_and_quant():
    """The layer list is the map: a module missing from it is a module a reader cannot place."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    named = set(SECTION_PATH.findall(text))
    missing = []
    for p in sorted([*ROOT.glob("golf/**/*.py"), *ROOT.glob("quant/**/*.py")]):
        rel = p.relative_to(ROOT)
        if p.name.startswith("__"):
            continue
        if str(rel) not in named and not any(str(rel).startswith(d) and d.endswith("/") and
                                             p.stem in text for d in named):
            missing.append(str(rel))
    assert not missing, f"modules ARCHITECTURE.md does not mention: {missing}"


def test_architecture_states_what_the_packed_script_leaves_out():
    """The paragraph on what ships names exactly the modules of golf/ship.py's optional parts."""
    from golf import ship
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    para = next(p for p in text.split("\n\n") if p.startswith("What is shipped inside the packed"))
    stated = set(DOTTED.findall(para)) - {"golf.main", "golf.ship.optional", "golf.PACKED_PARTS",
                                          "quant.codec.LEFT_OUT"}
    assert stated == {m for part in ship.PARTS.values() for m in part.modules}


def test_readme_quick_start_holds_the_lines_ci_runs():
    """.ci/run takes the first README line ending in `# setup ...` / `# tests ...` (outside
    comments) and runs it in a fresh venv: each must be there once, and be the command meant."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()

    def tagged(tag: str) -> list[str]:
        pat = re.compile(rf"^[^#].*#\s*{tag}\b")
        return [re.sub(r"\s+#.*$", "", ln) for ln in lines if pat.match(ln)]
    assert tagged("setup") == ["pip install -r requirements.txt"]
    assert tagged("tests") == ["python -m pytest -q"]
    assert any(re.match(r"^python train_gpt\.py\s+# main job", ln) for ln in lines)
    # the default run deselects the slow end-to-end checks; CI runs them with the same command
    assert '-m "not slow"' in (ROOT / "pytest.ini").read_text(encoding="utf-8")
    assert 'eval "$test_cmd -m slow"' in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pytest -q -m slow" in "\n".join(lines)
