"""The docs runner's reading of a page (tests/docs_blocks.py), on small pages written here,
independent of what the docs hold."""

from __future__ import annotations

import pytest

from .docs_blocks import DocsBlockError, extract_blocks, runnable


def blocks(text: str):
    return extract_blocks(text, "p.md")


def test_languages_decide_what_runs():
    page = "\n".join([
        "```bash", "echo a", "```",
        "```sh", "echo b", "```",
        "```shell", "echo c", "```",
        "```python", "x = 1", "```",
        "```py", "y = 2", "```",
        "```console", "$ lth run", "```",
        "```toml", "a = 1", "```",
        "```", "plain", "```",
        '```python title="example.py"', "z = 3", "```",
        "``` {.bash}", "echo d", "```",
    ])
    got = [(b.line, b.language, b.action) for b in blocks(page)]
    assert got == [(1, "bash", "bash"), (4, "sh", "bash"), (7, "shell", "bash"),
                   (10, "python", "python"), (13, "py", "python"), (16, "console", None),
                   (19, "toml", None), (22, "", None), (25, "python", "python"),
                   (28, "bash", "bash")]


def test_code_is_what_lies_between_the_fences():
    page = "text\n```python\nimport os\n\nprint(os.sep)\n```\nmore\n"
    [block] = blocks(page)
    assert block.code == "import os\n\nprint(os.sep)\n"
    assert (block.line, block.first_code_line) == (2, 3)


def test_indented_fences_in_list_items_are_dedented():
    page = ("1. First install:\n\n    ```bash\n    pip install lth\n      echo nested\n"
            "    ```\n\n2. Then run.\n")
    [block] = blocks(page)
    assert block.action == "bash"
    assert block.code == "pip install lth\n  echo nested\n"
    assert block.line == 3


def test_tilde_fences_and_longer_fences_hold_shorter_ones():
    page = "~~~python\nx = '```'\n~~~\n````bash\n```\necho inner\n```\n````\n"
    first, second = blocks(page)
    assert (first.action, first.code) == ("python", "x = '```'\n")
    assert (second.action, second.code) == ("bash", "```\necho inner\n```\n")


def test_a_closing_fence_is_the_same_character_and_at_least_as_long():
    page = "```python\nx = 1\n~~~\n``\ny = 2\n```\n"
    [block] = blocks(page)
    assert block.code == "x = 1\n~~~\n``\ny = 2\n"


def test_a_python_block_of_prompts_is_a_doctest():
    page = "```python\n\n>>> 1 + 1\n2\n```\n```python\nprint('>>> not a prompt')\n```\n"
    assert [b.action for b in blocks(page)] == ["doctest", "python"]


def test_markers_apply_to_the_next_block_only():
    page = "\n".join([
        "<!-- docs-test: skip needs a CUDA GPU -->", "```bash", "lth run gpu.toml", "```",
        "<!-- docs-test: slow -->", "```python", "train()", "```",
        "<!--docs-test:output-->", "```bash", "level  acc", "```",
        "```bash", "lth status runs", "```",
    ])
    got = [(b.line, b.action, b.slow, b.skip_reason) for b in blocks(page)]
    assert got == [(2, "bash", False, "needs a CUDA GPU"), (6, "python", True, None),
                   (10, None, False, None), (13, "bash", False, None)]
    assert [b.line for b in runnable(blocks(page))] == [6, 13]


def test_a_marker_inside_a_block_is_code():
    page = "```bash\n<!-- docs-test: bogus -->\necho hi\n```\n"
    [block] = blocks(page)
    assert block.code.startswith("<!-- docs-test: bogus -->")


def test_markers_on_indented_fences():
    page = ("- item\n\n    <!-- docs-test: skip downloads CIFAR-10 -->\n"
            "    ```bash\n    x\n    ```\n")
    [block] = blocks(page)
    assert block.skip_reason == "downloads CIFAR-10"


@pytest.mark.parametrize(("page", "message"), [
    ("<!-- docs-test: skip -->\n```bash\nx\n```\n", "p.md, line 1: 'skip' needs a reason"),
    ("<!-- docs-test: slowly -->\n```bash\nx\n```\n",
     "p.md, line 1: unknown docs-test marker 'slowly'; allowed: 'skip', 'slow', 'output'"),
    ("<!-- docs-test: -->\n```bash\nx\n```\n", "unknown docs-test marker ''"),
    ("<!-- docs-test: slow 3 minutes -->\n```bash\nx\n```\n",
     "p.md, line 1: 'slow' takes no argument (got '3 minutes')"),
    ("text\n<!-- docs-test: slow -->\n\n```bash\nx\n```\n",
     "p.md, line 2: the docs-test marker is not directly followed by a code fence"),
    ("<!-- docs-test: slow -->\nprose\n", "p.md, line 1: the docs-test marker is not directly"),
    ("<!-- docs-test: slow -->", "p.md, line 1: the docs-test marker is not directly"),
    ("<!-- docs-test: slow -->\n<!-- docs-test: skip x -->\n```bash\nx\n```\n",
     "p.md, line 1: two docs-test markers in a row"),
    ("<!-- docs-test: slow -->\n```toml\na = 1\n```\n",
     "p.md, line 1: 'slow' marks a toml block, which is not run anyway"),
    ("a\n\n```python\nx = 1\n", "p.md, line 3: the code fence '```' is never closed"),
])
def test_bad_markers_and_fences_are_errors_naming_the_line(page, message):
    with pytest.raises(DocsBlockError) as info:
        blocks(page)
    assert message in str(info.value)


def test_other_comments_and_inline_mentions_are_prose():
    page = ("<!-- a note -->\n```bash\necho hi\n```\n"
            "Mark a block with `<!-- docs-test: skip REASON -->` on the line before.\n")
    [block] = blocks(page)
    assert (block.action, block.skip_reason) == ("bash", None)
