"""Docker's word processing: expansion, word splitting, and the ENV/LABEL/ARG key-value forms.

Expected values follow dockerd 20.10's classic builder (test_build_differential.py checks a
Dockerfile full of these against it live); the colon-less ${V-x} and ${V+x}, which dockerd
20.10 refuses, follow POSIX as current Docker does.
"""

from __future__ import annotations

import pytest

from runtime.build.shell_words import (
    expand_word,
    expand_words,
    parse_arg_defaults,
    parse_key_values,
    parse_words,
)
from runtime.errors import BuildError

ENV = {"A": "alpha", "E": "", "SP": "x  y", "N": "1"}

EXPAND = [
    ("plain", "plain"),
    ("$A", "alpha"),
    ("${A}", "alpha"),
    ("pre${A}post", "prealphapost"),
    ("$Apost", ""),                 # the name runs on
    ("$A-post", "alpha-post"),
    ("$NOPE", ""),
    ("$", "$"),
    ("a$", "a$"),
    ("$1", ""),
    ("$$", ""),                     # a special parameter, never set in a build
    ("${A:-x}", "alpha"), ("${E:-x}", "x"), ("${NOPE:-x}", "x"),
    ("${A:+x}", "x"), ("${E:+x}", ""), ("${NOPE:+x}", ""),
    ("${A-x}", "alpha"), ("${E-x}", ""), ("${NOPE-x}", "x"),      # POSIX: set but empty is set
    ("${A+x}", "x"), ("${E+x}", "x"), ("${NOPE+x}", ""),
    ("${NOPE:-$A}", "alpha"), ("${NOPE:-${A:+in}}", "in"),
    ("${NOPE:-a b}", "a b"),
    ("${A?x}", "alpha"), ("${E?x}", ""), ("${A:?x}", "alpha"),
    ("'$A'", "$A"),
    ('"$A"', "alpha"),
    ('"a\\"b"', 'a"b'),
    ('"a\\b"', "a\\b"),             # in double quotes \ escapes only " $ \
    ('"\\$A"', "$A"),
    ('"\\\\"', "\\"),
    ("\\$A", "$A"),
    ("a\\ b", "a b"),
    ("\\'x\\'", "'x'"),
    ("'a\\'", "a\\"),               # nothing escapes inside single quotes
    ("'x'\"y\"z", "xyz"),
    ("end\\", "end"),               # an escape at the end is dropped
    ('"$SP"', "x  y"),
    ("$SP", "x  y"),                # expand_word keeps blanks
]


@pytest.mark.parametrize(("word", "expected"), EXPAND)
def test_expand_word(word, expected):
    assert expand_word(word, ENV) == expected


@pytest.mark.parametrize(("word", "expected"), [
    ("`$A", "$A"), ("a` b", "a b"), ('"a`"b"', 'a"b'), ("a\\b", "a\\b"), ("'`'", "`")])
def test_expand_word_with_backtick_escape(word, expected):
    assert expand_word(word, ENV, escape="`") == expected


@pytest.mark.parametrize(("word", "message"), [
    ("${A", "missing ':' in substitution"),
    ("${A:-x", "syntax error: missing '}'"),
    ("${", "syntax error: missing '}'"),
    ("${}", "syntax error: bad substitution"),
    ("${:-x}", "syntax error: bad substitution"),
    ("${A:=x}", "unsupported modifier (=) in substitution"),
    ("${A#x}", "missing ':' in substitution"),
    ("'abc", "unexpected end of statement while looking for matching single-quote"),
    ('"abc', "unexpected end of statement while looking for matching double-quote"),
    ("${NOPE?}", "NOPE: is not allowed to be unset"),
    ("${E:?}", "E: is not allowed to be empty"),
    ("${NOPE:?gone}", "NOPE: gone"),
])
def test_expand_word_errors(word, message):
    with pytest.raises(BuildError) as caught:
        expand_word(word, ENV)
    quoted = word.replace('"', '\\"')
    assert str(caught.value) == f'failed to process "{quoted}": {message}'


@pytest.mark.parametrize(("text", "words"), [
    ("a b  c", ["a", "b", "c"]),
    ("$SP z", ["x", "y", "z"]),                 # a variable's blanks split (EXPOSE $PORTS)
    ('"$SP" z', ["x  y", "z"]),
    ("a\\ b c", ["a b", "c"]),
    ("'a b'c d", ["a bc", "d"]),
    ('"" x', ["x"]),                            # Docker drops an empty quoted word
    ("${NOPE:-80 90}", ["80", "90"]),
    ("", []),
])
def test_expand_words(text, words):
    assert expand_words(text, ENV) == words


@pytest.mark.parametrize(("rest", "words"), [
    ('a="x y" b=c', ['a="x y"', "b=c"]),
    ("a=x\\ y  b", ["a=x\\ y", "b"]),
    ("a='x \\' y", ["a='x \\'", "y"]),          # \ escapes nothing in single quotes
    ('a="x \\" y"', ['a="x \\" y"']),
    ('a=""', ['a=""']),
    ('""', ['""']),
    ("x\\", ["x"]),
])
def test_parse_words_keeps_quotes(rest, words):
    assert parse_words(rest) == words


@pytest.mark.parametrize(("args", "keyword", "pairs"), [
    (["a=b c=d"], "ENV", [("a", "b"), ("c", "d")]),
    ('a="x y" b=c\\ d e=f"g h"i', "LABEL", [("a", '"x y"'), ("b", "c\\ d"), ("e", 'f"g h"i')]),
    (["legacy  spaced   value"], "ENV", [("legacy", "spaced   value")]),
    (['"a b"=c'], "LABEL", [('"a b"', "c")]),
    (["k=v=w"], "ENV", [("k", "v=w")]),
    (["a=1 b c=2"], "ARG", [("a", "1"), ("b", ""), ("c", "2")]),
    (["a="], "ENV", [("a", "")]),
])
def test_parse_key_values(args, keyword, pairs):
    assert parse_key_values(args, keyword) == pairs


def test_parse_arg_defaults_tells_no_default_from_empty():
    assert parse_arg_defaults(["a b= c=x"]) == [("a", None), ("b", ""), ("c", "x")]


@pytest.mark.parametrize(("args", "keyword", "message"), [
    ([""], "ENV", "ENV requires at least one argument"),
    (["a"], "LABEL", "LABEL must have two arguments"),
    (["a=b c"], "ENV", 'Syntax error - can\'t find = in "c". Must be of the form: name=value'),
    (["=b"], "ENV", "ENV names can not be blank"),
    (["=b"], "ARG", "ARG names can not be blank"),
    ([], "ARG", "ARG requires at least one argument"),
])
def test_parse_key_values_errors(args, keyword, message):
    with pytest.raises(BuildError) as caught:
        parse_key_values(args, keyword)
    assert str(caught.value) == message
