"""Wrap the lines longer than pyproject's line length (ruff E501) in the house style, and print what is left.

    python scripts/wrap_lines.py [PATH ...]        (default: the whole repository, as ruff sees it)

The code is written with visually aligned continuations, which no formatter produces, so this does only what a
careful person would: code breaks after the last comma that fits, inside brackets, and goes on under the
bracket's first argument; a string literal inside brackets that is still too long splits at a space into two
literals (implicit concatenation, never inside an f-string's braces); comments and docstrings reflow at word
boundaries. Anything else (a long string outside brackets, a `# noqa` comment) is printed for a person to
wrap. Idempotent; run `ruff check` afterwards.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LIMIT = int(re.search(r"line-length\s*=\s*(\d+)", (ROOT / "pyproject.toml").read_text()).group(1))  # type: ignore[union-attr]


def long_lines(paths: list[str]) -> dict[Path, list[int]]:
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "E501",
                          "--output-format", "concise", *paths], cwd=ROOT, capture_output=True,
                         text=True).stdout
    found: dict[Path, list[int]] = {}
    for line in out.splitlines():
        m = re.match(r"(.+?):(\d+):\d+: E501", line)
        if m:
            found.setdefault(ROOT / m.group(1), []).append(int(m.group(2)))
    return found


def _tokens(src: str) -> list[tokenize.TokenInfo]:
    return list(tokenize.generate_tokens(io.StringIO(src).readline))


def _docstring_lines(toks: list[tokenize.TokenInfo]) -> set[int]:
    """Line numbers inside multi-line strings that are statements of their own (docstrings)."""
    lines: set[int] = set()
    for i, t in enumerate(toks):
        if t.type != tokenize.STRING:
            continue
        before = next((toks[j] for j in range(i - 1, -1, -1) if toks[j].type not in (tokenize.NL,
                                                                                     tokenize.COMMENT)),
                      None)
        after = toks[i + 1] if i + 1 < len(toks) else None
        if (before is None or before.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)) and \
                after is not None and after.type == tokenize.NEWLINE:
            lines.update(range(t.start[0], t.end[0] + 1))
    return lines


def _split_words(text: str, room: int) -> tuple[str, str] | None:
    """text cut at the last space at or before `room` characters: (head, rest), or None."""
    cut = text.rfind(" ", 0, room + 1)
    if cut <= 0:
        return None
    return text[:cut].rstrip(), text[cut + 1:].lstrip()


def _wrap_comment(line: str) -> list[str] | None:
    indent = line[: len(line) - len(line.lstrip())]
    body = line.lstrip()[1:].lstrip()
    if re.fullmatch(r"(.*?)\s*-{3,}", body):  # a "# --- section -----" rule: shorten its dashes
        return [line[:LIMIT]]
    out, lead = [], indent + "# "
    while len(lead + body) > LIMIT:
        parts = _split_words(body, LIMIT - len(lead))
        if parts is None:
            return None
        out.append(lead + parts[0])
        body = parts[1]
    return [*out, lead + body]


def _reflow_docstring(lines: list[str], n: int, doc: set[int]) -> bool:
    """Line n (1-based) of a docstring: its last words go to the start of the next line of the same paragraph,
    or onto a new line at the same indentation."""
    line = lines[n - 1]
    indent = line[: len(line) - len(line.lstrip())]
    parts = _split_words(line, LIMIT)
    if parts is None or not parts[0].strip():
        return False
    head, rest = parts
    nxt = lines[n] if n < len(lines) else ""
    same_paragraph = (n + 1 in doc and nxt.strip() and not nxt.strip().startswith(('"""', "- ", "* ", ">>>"))
                      and nxt[: len(nxt) - len(nxt.lstrip())] == indent and not rest.endswith('"""'))
    if same_paragraph:
        lines[n - 1], lines[n] = head, indent + rest + " " + nxt.lstrip()
    else:
        lines[n - 1:n] = [head, indent + rest]
    return True


def _brackets(toks: list[tokenize.TokenInfo], lines: list[str]) -> dict[int, list[tuple[int, int, int, int]]]:
    """For each line, where a break may go: (start column, end column, continuation column, depth) of commas
    inside brackets and of string literals inside brackets. A continuation starts just after the open bracket,
    or at the next line's indentation where the bracket ends its line (a hanging indent); a literal's goes
    under the literal, as implicit concatenation is written. No break inside a subscript (tuple[int, int]) or
    inside a short bracket that opens and closes on one line ((5, 5)): those read worse broken."""
    stack: list[dict[str, Any]] = []
    out: dict[int, list[tuple[int, int, int, int]]] = {}
    assigned = False  # after the '=' of an assignment: its right-hand side's commas may break
    # Lines that begin a statement: only they take a backslash break (a continuation of one is left to a
    # person)
    starts: set[int] = set()
    begin = True
    for t in toks:
        if t.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            begin = True
        elif t.type not in (tokenize.NL, tokenize.COMMENT):
            if begin:
                starts.add(t.start[0])
            begin = False
    for i, t in enumerate(toks):
        if t.type == tokenize.OP and t.string in "([{":
            nxt = toks[i + 1] if i + 1 < len(toks) else None
            if nxt is not None and nxt.type in (tokenize.NL, tokenize.COMMENT):
                follow = lines[t.start[0]] if t.start[0] < len(lines) else ""
                col = len(follow) - len(follow.lstrip())
            else:
                col = t.end[1]
            prev = toks[i - 1] if i else None
            stack.append({"col": col, "start": t.start, "commas": [],
                          "subscript": t.string == "[" and prev is not None and prev.type == tokenize.NAME
                          and prev.end == t.start})
        elif t.type == tokenize.OP and t.string in ")]}":
            if stack:
                b = stack.pop()
                short = b["start"][0] == t.start[0] and t.start[1] - b["start"][1] < 40
                if not b["subscript"] and not short:
                    for c in b["commas"]:
                        out.setdefault(c.start[0], []).append((c.start[1], c.end[1], b["col"], len(stack)))
        elif t.type == tokenize.STRING and t.start[0] == t.end[0] and stack:
            out.setdefault(t.start[0], []).append((t.start[1], t.end[1], t.start[1], len(stack)))
        elif t.type == tokenize.OP and t.string == "," and stack:
            stack[-1]["commas"].append(t)
        elif not stack and t.start[0] in starts and (t.string in ("and", "or", "if", "else", "+", "==")
                                                     or (t.string == "," and assigned)):
            # outside brackets: a backslash, and the operator starts the continuation (as cli/__init__.py
            # does)
            line = lines[t.start[0] - 1]
            out.setdefault(t.start[0], []).append((t.start[1], t.end[1], len(line) - len(line.lstrip()) + 4,
                                                   -1))
        if t.type == tokenize.OP and t.string == "=" and not stack:
            assigned = True
        elif t.type in (tokenize.NEWLINE, tokenize.NL) and not stack:
            assigned = False
    return out


def _break_code(line: str, breaks: list[tuple[int, int, int, int]],
                following: str) -> tuple[list[str], bool] | None:
    """One physical line of code: broken after the last comma that fits and continued under the bracket's
    first argument; else a string literal that crosses the limit split at a space, its last words moved to the
    start of the next line's literal when that line continues it (True: the next line is replaced too)."""
    end = len(line.rstrip())
    commas = [(depth, -e, col) for s, e, col, depth in breaks
              if line[s:e] == "," and depth >= 0 and e <= LIMIT and e < end and col < e]
    if commas:  # the outermost bracket first, and in it the last comma that fits
        _, cut, col = min(commas)
        return [line[:-cut].rstrip(), " " * col + line[-cut:].lstrip()], False
    # the rightmost literal that starts before the limit
    for s, e, col, depth in sorted(breaks, reverse=True):
        if depth >= 0 and line[s:e] != "," and s < LIMIT - 10:
            split = _split_string(line, s, e, col, following)
            if split:
                return split
    ops = [(s, e, col) for s, e, col, depth in breaks
           if depth < 0 and len(line[:s].rstrip()) + 2 <= LIMIT and line[e:].strip(" \\")]
    if ops:
        s, e, col = ops[-1]
        if line[s:e] == ",":  # the comma ends the first line
            return [line[:e] + " \\", " " * col + line[e:].lstrip()], False
        return [line[:s].rstrip() + " \\", " " * col + line[s:].lstrip()], False
    return None


def _literal(prefix: str, quote: str, body: str) -> str:
    """A literal of `body`; an f prefix only where there is a placeholder (ruff F541)."""
    if "f" in prefix.lower() and "{" not in body.replace("{{", ""):
        prefix = prefix.replace("f", "").replace("F", "")
        body = body.replace("{{", "{").replace("}}", "}")
    return prefix + quote + body + quote


def _split_string(line: str, start: int, end: int, col: int, following: str) -> tuple[list[str], bool] | None:
    """'"a b c"' at columns start:end -> '"a b "' and '"c"', cut at a space outside an f-string's braces."""
    text = line[start:end]
    m = re.match(r"([rRbBfFuU]{0,2})(['\"])", text)
    if not m or text.startswith(m.group(0) * 3) or len(text) < len(m.group(0)) + 1:
        return None
    prefix, quote = m.group(1), m.group(2)
    body = text[len(m.group(0)):-1]
    depth, candidates, i = 0, [], 0
    while i < len(body) and start + len(m.group(0)) + i < LIMIT - 1:
        ch = body[i]
        if ch == "\\":
            i += 2
            continue
        if "f" in prefix.lower() and ch in "{}":
            if body[i:i + 2] in ("{{", "}}"):
                i += 2
                continue
            depth += 1 if ch == "{" else -1
        if ch == " " and depth == 0 and body[i + 1:].strip():
            candidates.append(i)
        i += 1
    if not candidates:
        return None
    cut = candidates[-1] + 1  # the space stays at the end of the first part
    head, moved, tail = body[:cut], body[cut:], line[end:]
    first = line[:start] + _literal(prefix, quote, head) + tail.rstrip() if not tail.strip() else None
    nxt = re.match(r"(\s*)([rRbBfFuU]{0,2})(['\"])", following)
    if first is not None and nxt and len(nxt.group(1)) == start and nxt.group(3) == quote \
            and not following.lstrip()[len(nxt.group(2)):].startswith(quote * 3) \
            and ("f" in nxt.group(2).lower()) >= ("{" in moved.replace("{{", "")):
        # the next line continues the literal: the moved words start it
        rest = following[len(nxt.group(0)):]
        merged = " " * start + _literal(nxt.group(2) or prefix.replace("f", "").replace("F", ""), quote,
                                        moved + rest[: rest.index(quote)] if quote in rest else moved)
        if quote in rest:
            return [first, merged + rest[rest.index(quote) + 1:]], True
    second = " " * col + _literal(prefix, quote, moved) + tail
    return [line[:start] + _literal(prefix, quote, head), second], False


def fix(path: Path, numbers: list[int]) -> None:
    src = path.read_text(encoding="utf-8")
    lines = src.split("\n")
    toks = _tokens(src)
    doc = _docstring_lines(toks)
    breaks = _brackets(toks, lines)
    for n in sorted(numbers, reverse=True):  # bottom up: the numbers above stay right
        line = lines[n - 1]
        if len(line) <= LIMIT:
            continue
        if n in doc:
            _reflow_docstring(lines, n, doc)
            continue
        if line.lstrip().startswith("#"):
            new = _wrap_comment(line)
            nxt = lines[n] if n < len(lines) else ""
            indent = line[: len(line) - len(line.lstrip())]
            if new and len(new) == 2 and nxt.startswith(indent + "# ") \
                    and not nxt.startswith(indent + "#  ") and not re.search(r"-{3,}\s*$", nxt):
                # the rest of the sentence starts the next line of the same comment
                lines[n - 1:n + 1] = [new[0], new[1] + " " + nxt[len(indent) + 2:]]
                continue
        else:
            code, hash_, comment = line.partition("  # ")
            if hash_ and len(code) <= LIMIT and not comment.startswith(("noqa", "type:")):
                indent = code[: len(code) - len(code.lstrip())]
                new = _wrap_comment(indent + "# " + comment)
                new = new + [code.rstrip()] if new else None
            else:
                broken = _break_code(line, breaks.get(n, []), lines[n] if n < len(lines) else "")
                if broken and broken[1]:
                    lines[n - 1:n + 1] = broken[0]
                    continue
                new = broken[0] if broken else None
        if new:
            lines[n - 1:n] = new
    path.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    paths = sys.argv[1:] or ["."]
    for _ in range(8):  # each pass may leave a continuation that is still too long
        todo = long_lines(paths)
        if not todo:
            break
        for path, numbers in todo.items():
            fix(path, numbers)
    for path, numbers in long_lines(paths).items():
        lines = path.read_text(encoding="utf-8").split("\n")
        for n in numbers:
            print(f"{path.relative_to(ROOT)}:{n}: {lines[n - 1].strip()[:100]}")


if __name__ == "__main__":
    main()
