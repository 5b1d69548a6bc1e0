"""COPY, ADD and WORKDIR steps: files into the image through an overlay view of its layers.

Sources come from the build context (`build_context.copy_sources`, .dockerignore applied
when walking directories) or, with `COPY --from`, from another stage or an image,
mounted read-only the same way. What the step writes lands in the view's upper
directory, which becomes the step's layer; the cache key holds a hash of the sources.
"""

from __future__ import annotations

import contextlib
import copy as copy_module
import fnmatch
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .. import path_scope
from ..errors import InvalidArgument
from . import build_files, build_steps
from .build_cache import step_key
from .build_context import copy_sources
from .build_mount import merged_view, remove_scratch
from .dockerfile import Instruction
from .shell_words import expand_word

if TYPE_CHECKING:
    from .builder import Builder, State


class FileSteps:
    """The file-writing steps of one build (see the module docstring)."""

    def __init__(self, builder: Builder) -> None:
        self.b = builder

    # -- COPY, ADD and WORKDIR ---------------------------------------------------------------
    def copy(self, state: State, ins: Instruction) -> None:
        kw = ins.keyword
        if "chmod" in ins.flags:
            raise InvalidArgument("the --chmod option requires BuildKit")
        build_steps.check_flags(ins, ("chown", "from") if kw == "COPY" else ("chown",))
        words = self.b.words(state, ins)
        if len(words) < 2:
            raise InvalidArgument(f"{kw} requires at least two arguments, but only one was provided. "
                                  "Destination could not be determined.")
        *patterns, dest = words
        if kw == "ADD":
            for p in patterns:
                if "://" in p:
                    raise InvalidArgument(f"ADD from a URL ({p}) is not supported by Dockyard's builder")
        dest_is_dir = dest.endswith("/") or dest.endswith("/.") or dest == "."
        if not dest.startswith("/"):
            dest = (state.rc.get("WorkingDir") or "/").rstrip("/") + "/" + dest
        chown = self._expand_flag(state, ins, "chown")
        source_from = self._expand_flag(state, ins, "from")
        flags = "".join(f"--{k}={ins.flags[k]} " for k in sorted(ins.flags))
        shell = " ".join(build_steps.shell_of(state.rc))
        if source_from:
            # Layers are content-addressed: the source stage's chain and the patterns name the
            # files exactly, so a cache hit needs no mount of the other stage.
            src_chains = self._source_chains(source_from)
            digest = hashlib.sha256(json.dumps([src_chains, patterns]).encode()).hexdigest()
            created_by = f"{shell} #(nop) {kw} {flags}from:{digest} in {dest} "
            key = step_key(state.id, created_by, digest)
            if self.b.cached(state, key):
                return
            with self._scratch() as scratch:
                self._copy_from(state, ins, src_chains, patterns, dest, dest_is_dir, chown, scratch, key,
                                created_by)
            return
        sources = []
        for pattern in patterns:
            paths = copy_sources(self.b.context, [pattern], self.b.matcher, kw)
            # A source named without wildcards keeps its name even when it is a symlink.
            named = "" if any(c in pattern for c in "*?[") else os.path.basename(path_scope.clean(pattern))
            sources += [build_files.Source(p, os.path.relpath(p, self.b.context), named) for p in paths]
        if not sources:
            raise InvalidArgument(f"{kw} failed: no source files were specified")
        digest = build_files.sources_hash(sources, self._ignored)
        created_by = (f"{shell} #(nop) {kw} {flags}{'multi' if len(sources) > 1 else 'file'}:{digest} "
                      f"in {dest} ")
        key = step_key(state.id, created_by, digest)
        if self.b.cached(state, key):
            return
        with self._scratch() as scratch:
            self._write(state, ins, sources, dest, dest_is_dir, chown, self._ignored, kw == "ADD",
                        scratch, key, created_by)

    def _ignored(self, rel: str) -> bool:
        """.dockerignore while walking a source directory: an ignored directory is still
        entered when an exception may keep something inside it."""
        matcher = self.b.matcher
        if not matcher.ignored(rel):
            return False
        path = self.b.context / rel
        return not (path.is_dir() and not path.is_symlink() and matcher.may_contain_kept(rel))

    @contextlib.contextmanager
    def _scratch(self) -> Iterator[Path]:
        scratch = self.b.scratch()
        try:
            yield scratch
        finally:
            remove_scratch(scratch)

    def _expand_flag(self, state: State, ins: Instruction, name: str) -> str:
        value = ins.flags.get(name, "")
        return expand_word(value, self.b.env(state), self.b.df.escape) if value else ""

    def _copy_from(self, state: State, ins: Instruction, src_chains: list[str], patterns: list[str],
                   dest: str, dest_is_dir: bool, chown: str, scratch: Path, key: str, created_by: str) -> None:
        with merged_view(self.b.backend.layer_dirs(src_chains), scratch / "from") as (src_root, _):
            root_fd = os.open(src_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fds: list[int] = []
            try:
                sources = []
                for pattern in patterns:
                    for rel in glob_in_root(root_fd, pattern):
                        fd = path_scope.open_in_root(root_fd, rel)
                        fds.append(fd)
                        sources.append(build_files.Source(Path(path_scope.fd_path(fd)), rel))
                self._write(state, ins, sources, dest, dest_is_dir, chown, None, False, scratch, key, created_by)
            finally:
                for fd in fds:
                    os.close(fd)
                os.close(root_fd)

    def _source_chains(self, source_from: str) -> list[str]:
        if source_from.isdigit():
            index = int(source_from)
            if index >= len(self.b.stages):
                raise InvalidArgument(f"invalid from flag value {source_from}: refers to current "
                                      "build stage or a later one")
            return self.b.stages[index].chain_ids
        for s in self.b.stages:
            if s.name == source_from.lower():
                return s.chain_ids
        return self.b.backend.base_image(source_from, False, self.b.out.emit).chain_ids

    def _write(self, state: State, ins: Instruction, sources: list[build_files.Source], dest: str,
               dest_is_dir: bool, chown: str, skip: Callable[[str], bool] | None, extract: bool,
               scratch: Path, key: str, created_by: str) -> None:
        """Copy the sources into the state's root and commit what changed as the step's layer."""
        if len(sources) > 1 and not dest_is_dir:
            raise InvalidArgument(f"When using {ins.keyword} with more than one source file, "
                                  "the destination must be a directory and end with a /")
        skip_fn = skip or (lambda rel: False)
        with merged_view(self.b.backend.layer_dirs(state.chain_ids), scratch / "dest") as (root, upper):
            root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                owner = build_files.parse_owner(chown, root_fd) if chown else None
                for src in sources:
                    build_files.copy_source(root_fd, src, dest, dest_is_dir or len(sources) > 1, owner,
                                            skip_fn, extract)
            finally:
                os.close(root_fd)
        layer = self.b.backend.commit_dir(upper, state.chain_ids[-1] if state.chain_ids else "")
        self.b.commit_step(state, created_by, layer, key)

    def workdir(self, state: State, ins: Instruction) -> None:
        comment = build_steps.apply_workdir(state.rc, self.b.words(state, ins))
        created_by = " ".join(build_steps.shell_of(state.rc)) + " #(nop)  " + comment
        workdir = state.rc["WorkingDir"]
        config_after = copy_module.deepcopy(state.config)
        key = step_key(state.id, created_by)
        if self.b.cached(state, key):
            return
        state.config = config_after
        scratch = self.b.scratch()
        try:
            with merged_view(self.b.backend.layer_dirs(state.chain_ids), scratch) as (root, upper):
                root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    os.close(build_files.make_dirs(root_fd, workdir, None))
                finally:
                    os.close(root_fd)
            layer = None
            if os.listdir(upper):
                layer = self.b.backend.commit_dir(upper, state.chain_ids[-1] if state.chain_ids else "")
        finally:
            remove_scratch(scratch)
        self.b.commit_step(state, created_by, layer, key)



def glob_in_root(root_fd: int, pattern: str) -> list[str]:
    """Source paths of COPY --from: the pattern's last component may hold wildcards."""
    clean = path_scope.clean(pattern).lstrip("/")
    parent, _, last = clean.rpartition("/")
    if not any(c in last for c in "*?["):
        try:
            os.close(path_scope.open_in_root(root_fd, clean))
        except (FileNotFoundError, NotADirectoryError):
            raise InvalidArgument(f"COPY failed: stat {pattern}: file does not exist") from None
        return [clean]
    fd = path_scope.open_in_root(root_fd, parent)
    try:
        names = sorted(n for n in os.listdir(path_scope.fd_path(fd)) if fnmatch.fnmatchcase(n, last))
    finally:
        os.close(fd)
    if not names:
        raise InvalidArgument(f"COPY failed: no source files were specified ({pattern})")
    return [f"{parent}/{n}" if parent else n for n in names]


