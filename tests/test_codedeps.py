"""The static import scan behind every rule's code inputs (neurotrain.codedeps)."""

import ast
import textwrap

from neurotrain import codedeps

SOURCE = textwrap.dedent('''
    import a
    from . import b
    def f():
        import c
        class K:
            from d import e
    if x:
        import g
    elif y:
        import h
    else:
        import i
    try:
        import j
    except ImportError:
        import k
    else:
        import l
    finally:
        import m
    with open(p) as q:
        import n
    for r in s:
        import o
    while t:
        import p2
    async def u():
        async with v:
            import w
    match z:
        case 1:
            import y2
    x = lambda: __import__("not_a_statement")
''')


def test_every_import_statement_is_found_in_every_kind_of_block():
    tree = ast.parse(SOURCE)
    walked = [ast.dump(n) for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    found = [ast.dump(n) for n in codedeps._statements(tree.body) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert sorted(found) == sorted(walked) and len(found) == 16


def test_closure_of_the_runner_holds_its_imports_and_their_packages():
    files = {p.relative_to(codedeps.ROOT).as_posix() for p in codedeps.closure("neurotrain.runner")}
    assert {"__init__.py", "runner.py", "errors.py", "config.py"} <= files
