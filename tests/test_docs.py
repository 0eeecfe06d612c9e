"""The docs keep their promises: every command, module, script, options file, repository path and link that
README.md and docs/*.md name exists, every documented flag is one its command accepts, and the README stays a
two-minute read. A rename that leaves a dead command behind fails here."""
import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
# Top-level folders of the repository; a path into one of them, named in code, must exist.
REPO_FOLDERS = ('jude_arch', 'datasets_prep', 'options', 'tests', 'docs', '.ci')
# Scripts the docs run that a documented command writes first: {path: the repository file it is a copy of}.
GENERATED_SCRIPTS = {'wheelhouse/install.py': 'jude_arch/tools/offline_install.py'}

FENCE = re.compile(r'^```(\w*)\n(.*?)^```', re.M | re.S)
INLINE = re.compile(r'`([^`]+)`')  # a code span may wrap onto the next line
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')
HEADING = re.compile(r'^#{1,6}\s+(.+?)\s*#*$', re.M)
# (not a placeholder such as tests/test_<module>.py)
REPO_PATH = re.compile(rf'(?<![\w./-])((?:{"|".join(map(re.escape, REPO_FOLDERS))})/[\w./*-]*[\w*])(?![<\w./*-])')
INLINE_MODULE = re.compile(r'python -m ([A-Za-z_][\w.]*\w)(?=[\s`]|$)')
DOTTED_NAME = re.compile(r'\bjude_arch(?:\.\w+)+')


@dataclass(frozen=True)
class Command:
    """One documented command line: `kind` is module, script or console; `target` what runs."""
    kind: str
    target: str
    flags: tuple
    where: str


def read(page):
    return page.read_text(encoding='utf-8')


def relative(page):
    return page.relative_to(ROOT).as_posix()


def fenced(text, languages=None):
    """Bodies of the fenced code blocks (of the given languages)."""
    return [body for language, body in FENCE.findall(text) if languages is None or language in languages]


def inline_code(text):
    return [' '.join(code.split()) for code in INLINE.findall(FENCE.sub('', text))]


def all_code(text):
    return fenced(text) + inline_code(text)


def shell_lines(block):
    """The command lines of a bash block: continuations joined, heredoc bodies skipped."""
    lines, heredoc_end = [], None
    for line in block.replace('\\\n', ' ').splitlines():
        if heredoc_end is not None:
            heredoc_end = None if line.strip() == heredoc_end else heredoc_end
            continue
        heredoc = re.search(r"<<-?\s*'?(\w+)'?", line)
        heredoc_end = heredoc.group(1) if heredoc else None
        lines.append(line)
    return lines


def parse_command(tokens, where, cwd='.'):
    """A Command for a line that runs this project's code (or a third-party module), else None. A script's
    path is taken from `cwd` (relative to the repository root) and given relative to the root."""
    while tokens and re.match(r'^[A-Z_]+=', tokens[0]):  # environment assignments
        tokens = tokens[1:]
    if tokens and tokens[0] in ('torchrun', 'srun'):  # the launched program: `python ...` or a script path
        start = next((i for i, t in enumerate(tokens) if t.startswith('python') or t.endswith('.py')), None)
        tokens = None if start is None else (tokens[start:] if tokens[start].startswith('python')
                                             else ['python'] + tokens[start:])
    if not tokens:
        return None
    flags = lambda args: tuple(a.split('=', 1)[0] for a in args if re.match(r'^--?[A-Za-z]', a))  # noqa: E731
    if tokens[0].startswith('jude-'):
        return Command('console', tokens[0], flags(tokens[1:]), where)
    if tokens[0] not in ('python', 'python3'):
        return None
    rest = tokens[1:]
    while rest and rest[0] in ('-u', '-X', '-O'):
        rest = rest[1:]
    if len(rest) >= 2 and rest[0] == '-m':
        if not re.fullmatch(r'[A-Za-z_][\w.]*', rest[1]):  # a placeholder: jude_arch.tools.<name>
            return None
        return Command('module', rest[1], flags(rest[2:]), where)
    if rest and rest[0].endswith('.py'):
        script = os.path.normpath(os.path.join(cwd, rest[0]))
        return Command('script', Path(script).as_posix(), flags(rest[1:]), where)
    return None  # python -c ..., python - <<...


def documented_commands():
    commands = []
    for page in PAGES:
        for block in fenced(read(page), ('bash', 'sh', 'shell')):
            cwd = '.'  # a `cd` moves the block's later commands, e.g. into the demo's work folder
            for line in shell_lines(block):
                tokens = shlex.split(line, comments=True)
                while tokens:  # `a && b`, `a; b`, `a | b`
                    cut = next((i for i, t in enumerate(tokens) if t in ('&&', ';', '|', '||')), len(tokens))
                    if tokens[0] == 'cd' and len(tokens) > 1:
                        cwd = os.path.join(cwd, tokens[1])
                    command = parse_command(tokens[:cut], f'{relative(page)}: {line.strip()}', cwd)
                    commands.append(command) if command else None
                    tokens = tokens[cut + 1:]
        for code in inline_code(read(page)):  # commands quoted in prose, e.g. `jude-restore --device cuda`
            try:
                command = parse_command(shlex.split(code), f'{relative(page)}: `{code}`')
            except ValueError:  # not shell syntax
                continue
            commands.append(command) if command else None
    return commands


def is_module(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent is a module, not a package
        return False


def ours(command):
    return command.kind != 'module' or command.target.split('.')[0] == 'jude_arch'


def entry_points():
    """Console scripts as setup.py declares them: {name: 'module:function'}."""
    return dict(re.findall(r"'(jude-[\w-]+)=([\w.]+:\w+)'", (ROOT / 'setup.py').read_text()))


def slug(heading):
    """GitHub's anchor of a heading."""
    text = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', heading)
    text = re.sub(r'[^\w\- ]', '', text.replace('`', '').replace('*', '').lower())
    return text.replace(' ', '-')


def anchors(page):
    seen, result = {}, set()
    for heading in HEADING.findall(FENCE.sub('', read(page))):
        base = slug(heading)
        result.add(base if base not in seen else f'{base}-{seen[base]}')
        seen[base] = seen.get(base, 0) + 1
    return result


def test_the_docs_name_commands_at_all():
    """The parser finds what the README documents, so the checks below cannot pass by finding nothing."""
    targets = {(c.kind, c.target) for c in documented_commands()}
    assert {('module', 'jude_arch.demo'), ('console', 'jude-restore'), ('script', 'jude_arch/train.py'),
            ('module', 'pytest')} <= targets


def test_documented_modules_are_importable():
    modules = {c.target for c in documented_commands() if c.kind == 'module'}
    modules |= {m for page in PAGES for code in inline_code(read(page)) for m in INLINE_MODULE.findall(code)}
    missing = sorted(m for m in modules if not is_module(m))
    assert not missing, f'documented modules that do not import: {missing}'


def test_documented_console_scripts_are_declared_in_setup():
    declared = entry_points()
    named = {c.target for c in documented_commands() if c.kind == 'console'}
    named |= {m for page in PAGES for code in inline_code(read(page)) for m in re.findall(r'^(jude-[\w-]+)', code)}
    assert named and named <= set(declared), f'not console scripts of setup.py: {sorted(named - set(declared))}'


def test_documented_files_exist():
    """Scripts that the docs run, and every repository path (options files included) that they name in code."""
    paths = {(c.target, c.where) for c in documented_commands() if c.kind == 'script'}
    for page in PAGES:
        for code in all_code(read(page)):
            paths |= {(path.rstrip('.'), relative(page)) for path in REPO_PATH.findall(code)}
    paths = {(GENERATED_SCRIPTS.get(path, path), where) for path, where in paths}
    missing = sorted((path, where) for path, where in paths
                     if not (ROOT / path).exists() and not list(ROOT.glob(path)))
    assert not missing, f'documented paths that do not exist: {missing}'


def test_generated_scripts_are_written_by_their_tool():
    from jude_arch.tools import wheelhouse

    assert wheelhouse.INSTALLER == ROOT / GENERATED_SCRIPTS['wheelhouse/install.py']


def test_documented_python_names_resolve():
    """`jude_arch.x.y` named in code is a module, or an attribute of one."""
    unresolved = []
    for page in PAGES:
        for name in {n for code in all_code(read(page)) for n in DOTTED_NAME.findall(code) if not n.endswith('.py')}:
            parts = name.split('.')
            for cut in range(len(parts), 0, -1):
                module_name = '.'.join(parts[:cut])
                if is_module(module_name):
                    break
            obj = importlib.import_module(module_name)
            for attribute in parts[cut:]:
                obj = getattr(obj, attribute, None)
            unresolved += [] if obj is not None else [f'{relative(page)}: {name}']
    assert not unresolved, unresolved


# Runs every `--help` in one interpreter (imports once), each as its command line would: a module under
# __main__, a script by path, a console script's function; writes {key: [exit status, output]} as JSON.
HELP_RUNNER = '''
import contextlib, importlib, io, json, runpy, sys, traceback
jobs, out_path = json.loads(sys.argv[1]), sys.argv[2]
results = {}
for key, kind, target in jobs:
    buffer, status = io.StringIO(), 0
    sys.argv = [target, '--help']
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            if kind == 'module':
                runpy.run_module(target, run_name='__main__', alter_sys=True)
            elif kind == 'script':
                runpy.run_path(target, run_name='__main__')
            else:
                module, function = target.split(':')
                status = getattr(importlib.import_module(module), function)()
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) or stop.code is None else 1
        except BaseException:
            status = traceback.format_exc()
    results[key] = [status or 0, buffer.getvalue()]
with open(out_path, 'w') as out:
    json.dump(results, out)
'''


def test_documented_commands_run_and_accept_their_flags(tmp_path):
    """`--help` of each of this project's documented commands exits 0 and lists every flag the docs pass it."""
    commands = [c for c in documented_commands() if ours(c)]
    targets = {'console': entry_points(), 'script': GENERATED_SCRIPTS, 'module': {}}  # a generated script's source
    jobs = sorted({(c.kind + ' ' + c.target, c.kind, targets[c.kind].get(c.target, c.target)) for c in commands})
    out = tmp_path / 'help.json'
    subprocess.run([sys.executable, '-c', HELP_RUNNER, json.dumps(jobs), str(out)], cwd=ROOT, check=True,
                   timeout=300)
    results = json.loads(out.read_text())
    failed = {key: (status, output[-2000:]) for key, (status, output) in results.items() if status != 0}
    assert not failed, f'--help failed: {failed}'
    unknown = []
    for command in commands:
        help_text = results[command.kind + ' ' + command.target][1]
        unknown += [f'{command.where}: {flag}' for flag in command.flags
                    if not re.search(rf'(?<![\w-]){re.escape(flag)}(?![\w-])', help_text)]
    assert not unknown, 'flags the command does not list in --help:\n' + '\n'.join(unknown)


def test_relative_links_and_images_resolve():
    broken = []
    for page in PAGES:
        for target in LINK.findall(FENCE.sub('', read(page))):
            if re.match(r'^[a-z]+:', target):  # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition('#')
            path = (page.parent / path_part).resolve() if path_part else page
            if not path.exists():
                broken.append(f'{relative(page)}: {target} (no such file)')
            elif anchor and path.suffix == '.md' and anchor not in anchors(path):
                broken.append(f'{relative(page)}: {target} (no heading #{anchor} in {path.name})')
    assert not broken, '\n'.join(broken)


def test_the_readme_is_a_two_minute_read():
    """At most 200 lines; install, the demo, restoring a photo and training within the first 120."""
    lines = read(ROOT / 'README.md').splitlines()
    assert len(lines) <= 200, f'README.md has {len(lines)} lines; move details to a docs/ page'
    headings = [line for line in lines[:120] if line.startswith('## ')]
    for topic in ('Install', 'demo', 'Restore', 'Train'):
        assert any(topic in heading for heading in headings), f'no "{topic}" section in README.md\'s first 120 lines'
