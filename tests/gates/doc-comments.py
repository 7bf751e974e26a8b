#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Gate doc-comments: every public function has a doc comment with Context:.

House style (design/style.md 3.4): each function declared in a public header
(include/migram/*.h, globbed now) carries a Doxygen block `/** ... */`
directly before it (only whitespace in between), and that block has a
`Context:` line from the vocabulary in docs/locking.md.  Static inline
functions defined in a public header count as public functions too.

The scanner is deliberately small: it splits each header into top-level
statements (ending at `;`, or at the closing brace of a function body),
skipping comments, strings and preprocessor lines.  A preprocessor line,
G_BEGIN_DECLS/G_END_DECLS or a G_DEFINE_*(...) line between a comment and a
declaration detaches the comment, so a macro's doc block is never taken for
the function below it.  Typedefs (function-pointer types included) are not
functions and are not checked here; clang -Wdocumentation (the
doc-comments-clang gate) checks their @param names.

usage: doc-comments.py SRCROOT
"""
import re
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gatelib  # noqa: E402

GATE = "doc-comments"

BARRIER_LINE = re.compile(
    r"[ \t]*(G_BEGIN_DECLS|G_END_DECLS|G_DEFINE_[A-Z0-9_]*\s*\(.*\)\s*;?)"
    r"[ \t]*$")
CONTEXT_LINE = re.compile(r"^[ \t]*\*?[ \t]*Context:[ \t]*\S", re.M)
ATTRIBUTE = re.compile(r"\b(__attribute__|G_GNUC_[A-Z_]+|G_DEPRECATED\w*|"
                       r"G_UNAVAILABLE|GLIB_AVAILABLE_IN_\w+|MIGRAM_\w+_IN_"
                       r"\w+)\s*")


def strip_attributes(code):
    """Drop __attribute__((...)) and G_GNUC_* style annotations."""
    out = ""
    i = 0
    while True:
        m = ATTRIBUTE.search(code, i)
        if not m:
            return out + code[i:]
        out += code[i:m.start()]
        j = m.end()
        if j < len(code) and code[j] == "(":
            depth = 0
            while j < len(code):
                depth += {"(": 1, ")": -1}.get(code[j], 0)
                j += 1
                if depth == 0:
                    break
        i = j


def function_name(code):
    """The name a top-level statement declares as a function, or None."""
    code = strip_attributes(code).strip()
    if not code or re.match(r"(typedef|extern\s+\"C\")\b", code):
        return None
    depth = 0
    for i, ch in enumerate(code):
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        elif ch == "=" and depth == 0:
            return None  # an initialised variable
        elif ch == "(" and depth == 0:
            if code[i + 1:].lstrip().startswith("*"):
                return None  # a function pointer variable
            m = re.search(r"([A-Za-z_]\w*)\s*$", code[:i])
            if not m or m.group(1).isupper():
                return None  # not a name, or a macro invocation
            return m.group(1)
    return None


def statements(text):
    """Yield (line, code, doc) per top-level statement of a header.

    doc is the text of the /** */ comment directly before the statement, or
    None.
    """
    i, n, line = 0, len(text), 1
    depth = 0           # brace depth (extern "C" { does not count)
    paren = 0
    code = ""           # current statement, comments removed
    start_line = None
    doc = None          # doc comment attached to the current statement
    last_doc = None     # most recent /** */ comment, if still attached
    at_line_start = True

    def finish():
        nonlocal code, start_line, doc
        if code.strip():
            yield_list.append((start_line, code, doc))
        code, start_line, doc = "", None, None

    yield_list = []
    while i < n:
        ch = text[i]
        if at_line_start:
            eol = text.find("\n", i)
            eol = n if eol < 0 else eol
            if text[i:eol].lstrip().startswith("#"):
                # preprocessor directive, with continuation lines
                while eol < n and text[eol - 1] == "\\":
                    line += 1
                    nxt = text.find("\n", eol + 1)
                    eol = n if nxt < 0 else nxt
                last_doc = None
                i = eol
                continue
            if depth == 0 and paren == 0 and BARRIER_LINE.match(text[i:eol]):
                last_doc = None
                i = eol
                continue
        if ch == "\n":
            line += 1
            at_line_start = True
            code += ch
            i += 1
            continue
        if ch in " \t\r\f\v":
            code += ch
            i += 1
            continue
        at_line_start = False
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            body = text[i:end]
            line += body.count("\n")
            is_doc = body.startswith("/**") and not body.startswith("/**<") \
                and body != "/**/"
            if not code.strip() and depth == 0:
                last_doc = body if is_doc else None
            i = end
            continue
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            if not code.strip() and depth == 0:
                last_doc = None
            i = end
            continue
        if ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if text[j] == "\\" else 1
            code += text[i:j + 1]
            i = j + 1
            continue
        # ordinary code character
        if not code.strip():
            start_line = line
            doc = last_doc
            last_doc = None
        if ch == "(":
            paren += 1
        elif ch == ")":
            paren -= 1
        elif ch == "{":
            if re.search(r"extern\s+\"C\"\s*$", code):
                code = ""
                i += 1
                continue
            depth += 1
        elif ch == "}":
            if depth == 0:
                i += 1  # closes extern "C" {
                continue
            depth -= 1
            if depth == 0 and paren == 0 and re.search(
                    r"\)\s*\{", code, re.S) and function_name(
                    code.split("{", 1)[0] + ";"):
                code += ch
                finish()
                i += 1
                continue
        elif ch == ";" and depth == 0 and paren == 0:
            finish()
            i += 1
            continue
        code += ch
        i += 1
    return yield_list


def main():
    root = Path(sys.argv[1])
    headers = gatelib.public_headers(root)
    if not headers:
        gatelib.fail(GATE, f"no headers found in {root}/include/migram")

    problems = []
    count = 0
    for h in headers:
        name_of = gatelib.rel(h, root)
        for line, code, doc in statements(h.read_text()):
            fn = function_name(code.split("{", 1)[0])
            if not fn:
                continue
            count += 1
            if doc is None:
                problems.append(f"{name_of}:{line}: {fn}: no /** */ doc "
                                "comment directly before it")
            elif not CONTEXT_LINE.search(doc):
                problems.append(f"{name_of}:{line}: {fn}: doc comment has "
                                "no 'Context:' line")

    for p in problems:
        print(f"  {p}")
    if problems:
        gatelib.fail(GATE, f"{len(problems)} public function(s) without a "
                           "proper doc comment: "
                           + ", ".join(p.split(": ")[1] for p in problems))
    if count == 0:
        gatelib.fail(GATE, "found no public functions at all; the scanner "
                           "is broken")
    gatelib.passed(GATE, f"{count} public functions documented with "
                         "Context:")


if __name__ == "__main__":
    main()
