"""Docker's word processing for Dockerfile arguments: quotes, escapes and variables.

Two steps, as in Docker's builder:

* `parse_words` is the parser's split of an ENV/LABEL/ARG line into words:
  quotes and escapes are *kept* (a word is still to be expanded), blanks
  outside quotes separate words. `parse_key_values` builds on it to read the
  `k=v k2=v2` form and the legacy `k v` form.
* `expand_word`/`expand_words` are the shell lexer Docker runs on each word
  when an instruction is dispatched: single quotes keep everything literal,
  double quotes keep blanks and allow `$` and escapes of `" $ \\`, the escape
  character (`\\` or the `# escape=` one) escapes anything outside quotes,
  and `$V`, `${V}`, `${V:-x}`, `${V-x}`, `${V:+x}`, `${V+x}`, `${V:?x}` and
  `${V?x}` substitute. `expand_words` also splits on unquoted blanks, blanks
  coming from a variable's value included (only EXPOSE does that in Docker).

Dockerd 20.10's classic builder knows only the forms with a colon (and `?`);
the forms without one follow POSIX, as current Docker does: `-` and `+` test
whether the variable is set at all rather than whether it is empty.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import BuildError

_SPECIAL_PARAMS = frozenset("@*#?-$!0")


class _Lexer:
    """One pass over one word: `pos` moves forward through `text`."""

    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        self.text = text
        self.env = env
        self.escape = escape
        self.pos = 0
        # Words split on blanks (for expand_words): the current word and those done.
        self.words: list[str] = []
        self.word = ""
        self.in_word = False

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    # Word splitting: blanks end a word unless they were quoted or escaped.
    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def finish_words(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words

    def process(self, stop: str = "") -> str:
        """The expanded text up to `stop` (consumed) or the end of the word."""
        result: list[str] = []
        while self.peek():
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                return "".join(result)
            if ch == "'":
                part = self.single_quoted()
                self.add_raw(part)
            elif ch == '"':
                part = self.double_quoted()
                self.add_raw(part)
            elif ch == "$":
                part = self.dollar()
                for c in part:
                    self.add_char(c)
            else:
                self.next()
                if ch == self.escape:
                    ch = self.next()
                    if not ch:
                        break   # an escape at the very end is dropped
                    self.add_raw(ch)
                else:
                    self.add_char(ch)
                part = ch
            result.append(part)
        if stop:
            raise BuildError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result)

    def single_quoted(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.next()
            if not ch:
                raise BuildError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                return "".join(out)
            out.append(ch)

    def double_quoted(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.peek()
            if not ch:
                raise BuildError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            self.next()
            if ch == self.escape:
                following = self.peek()
                if not following:
                    continue   # an escape at the end of the word is dropped
                if following in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        """A variable name: letters, digits and _, or all digits, or one special parameter."""
        start = self.pos
        ch = self.peek()
        if ch.isdigit():
            while self.peek().isdigit():
                self.next()
            return self.text[start:self.pos]
        if ch and ch in _SPECIAL_PARAMS:
            return self.next()
        while self.peek() and (self.peek().isalnum() or self.peek() == "_"):
            self.next()
        return self.text[start:self.pos]

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            return self.env.get(name, "") if name else "$"
        self.next()
        if not self.peek():
            raise BuildError("syntax error: missing '}'")
        if self.peek() in "{}:":
            raise BuildError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            return self.env.get(name, "")
        colon = ch == ":"
        modifier = self.next() if colon else ch
        if modifier not in ("-", "+", "?"):
            if colon:
                raise BuildError(f"unsupported modifier ({modifier}) in substitution")
            raise BuildError("missing ':' in substitution")
        # The word after the modifier is itself expanded, as a shell does.
        saved_words, saved_word, saved_in = self.words, self.word, self.in_word
        self.words, self.word, self.in_word = [], "", False
        try:
            word = self.process("}")
        except BuildError:
            if not self.peek():
                raise BuildError("syntax error: missing '}'") from None
            raise
        finally:
            self.words, self.word, self.in_word = saved_words, saved_word, saved_in
        is_set = name in self.env
        value = self.env.get(name, "")
        # With the colon an empty value counts as unset (POSIX).
        present = bool(value) if colon else is_set
        if modifier == "-":
            return value if present else word
        if modifier == "+":
            return word if present else ""
        if not present:
            default = "is not allowed to be empty" if colon else "is not allowed to be unset"
            raise BuildError(f"{name}: {word or default}")
        return value


def expand_word(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """`word` with quotes removed, escapes applied and variables substituted (blanks kept)."""
    try:
        return _Lexer(word, env, escape).process()
    except BuildError as err:
        raise BuildError(f"failed to process {_go_quote(word)}: {err.message}") from None


def expand_words(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """`text` expanded as `expand_word` does, then split on blanks that were not quoted."""
    lexer = _Lexer(text, env, escape)
    try:
        lexer.process()
    except BuildError as err:
        raise BuildError(f"failed to process {_go_quote(text)}: {err.message}") from None
    return lexer.finish_words()


def _go_quote(text: str) -> str:
    """Go's %q of a string, close enough for messages: double quotes, \\ and " escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_words(rest: str, escape: str = "\\") -> list[str]:
    """The parser's split of `rest` into words on blanks outside quotes; quotes and escapes kept."""
    words: list[str] = []
    word: list[str] = []
    blank_ok = False   # a quoted empty string is still a word
    quote = ""
    i = 0
    while i < len(rest):
        ch = rest[i]
        if quote:
            if ch == quote:
                quote = ""
            # Inside single quotes the escape character escapes nothing.
            elif ch == escape and quote != "'":
                if i + 1 == len(rest):
                    break
                word.append(ch)
                i += 1
                ch = rest[i]
            word.append(ch)
        elif ch.isspace():
            if blank_ok or word:
                words.append("".join(word))
            word, blank_ok = [], False
        else:
            if ch in ("'", '"'):
                quote, blank_ok = ch, True
            elif ch == escape:
                if i + 1 == len(rest):
                    break   # an escape at the end of the line is dropped
                word.append(ch)
                i += 1
                ch = rest[i]
            word.append(ch)
        i += 1
    if blank_ok or word:
        words.append("".join(word))
    return words


def parse_key_values(args: list[str] | str, keyword: str, escape: str = "\\") -> list[tuple[str, str]]:
    """The (key, value) pairs of an ENV, LABEL or ARG line, unexpanded (quotes still in place).

    `args` is the instruction's argument text (or its one-element list). ENV and
    LABEL take `k=v k2="v 2"` or the legacy `k v w` (key, then the rest of the
    line as the value); ARG takes `name` or `name=default` words, and a name
    without a default gives the value "" (`parse_arg_defaults` tells the two apart).
    Values go through `expand_word` when the instruction runs.
    """
    if keyword.upper() == "ARG":
        return [(name, value or "") for name, value in parse_arg_defaults(args, escape)]
    rest = " ".join(args) if isinstance(args, list) else args
    rest = rest.strip()
    kw = keyword.upper()
    words = parse_words(rest, escape)
    if not words:
        raise BuildError(f"{kw} requires at least one argument")
    if "=" not in words[0]:
        parts = rest.split(None, 1)
        if len(parts) < 2:
            raise BuildError(f"{kw} must have two arguments")
        pairs = [(parts[0], parts[1])]
    else:
        pairs = []
        for word in words:
            if "=" not in word:
                raise BuildError(f"Syntax error - can't find = in {_go_quote(word)}. "
                                 "Must be of the form: name=value")
            key, value = word.split("=", 1)
            pairs.append((key, value))
    if any(not key for key, _ in pairs):
        raise BuildError(f"{kw} names can not be blank")
    return pairs


def parse_arg_defaults(args: list[str] | str, escape: str = "\\") -> list[tuple[str, str | None]]:
    """ARG's (name, default) pairs; default None when the ARG gives none."""
    rest = " ".join(args) if isinstance(args, list) else args
    words = parse_words(rest.strip(), escape)
    if not words:
        raise BuildError("ARG requires at least one argument")
    found: list[tuple[str, str | None]] = []
    for word in words:
        if "=" in word:
            name, value = word.split("=", 1)
            if not name:
                raise BuildError("ARG names can not be blank")
            found.append((name, value))
        else:
            found.append((word, None))
    return found
