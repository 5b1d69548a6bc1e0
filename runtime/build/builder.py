"""The classic builder: a parsed Dockerfile and a build context in, an image out.

Each instruction is one step from a state (an image config and its layer chain) to the
next, as dockerd's classic builder goes: RUN runs in a real container of the engine and
its changes become a layer; COPY, ADD and a new WORKDIR write through an overlay view
of the layers (`build_mount`) and become a layer; every other instruction changes the
config only. Each step is looked up in the layer cache first (`build_cache`), so an
unchanged rebuild makes nothing. The engine side (images, containers, layers) is
behind `BuildBackend`, which `runtime.engine.builds` implements.

Output goes to `emit` as the classic builder's JSON messages (`build_output`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import InvalidArgument
from ..images.registry_credentials import RegistryCredentials
from ..timestamps import now_rfc3339
from . import build_output, build_steps
from .build_cache import BuildCache, CachedStep, step_key
from .build_file_steps import FileSteps
from .dockerfile import Dockerfile, Instruction, Stage, parse_instruction, path_words
from .dockerignore import IgnoreMatcher
from .shell_words import expand_word, expand_words, parse_arg_defaults, parse_key_values

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]
PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
              "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CONFIG_ONLY = {"ENV", "LABEL", "CMD", "ENTRYPOINT", "EXPOSE", "VOLUME", "USER", "STOPSIGNAL",
                "HEALTHCHECK", "SHELL", "ONBUILD", "MAINTAINER", "ARG"}


@dataclass
class BaseImage:
    """An image a stage starts from: its id, full config and layer chain."""

    id: str
    config: dict[str, Any]
    chain_ids: list[str]


@dataclass
class RunRequest:
    """One RUN container: the state it runs on and what it runs."""

    config: dict[str, Any]          # the full image config of the state
    chain_ids: list[str]
    run_config: dict[str, Any]      # container Config: Cmd, Env, User, WorkingDir, ...
    network: str
    remove: bool
    on_created: Callable[[str], None]
    on_output: Callable[[bytes], None]


class BuildBackend(Protocol):
    """What the builder needs from the engine."""

    scratch_root: Path

    def base_image(self, ref: str, pull: bool, emit: Emit) -> BaseImage: ...
    def layer_dirs(self, chain_ids: list[str]) -> list[Path]: ...
    def diff_ids(self, chain_ids: list[str]) -> list[str]: ...
    def layers_exist(self, chain_ids: list[str]) -> bool: ...
    def commit_dir(self, diff_dir: Path, parent_chain: str) -> str | None: ...
    def run(self, request: RunRequest) -> tuple[int, str | None]: ...
    def finish(self, config: dict[str, Any], chain_ids: list[str], tags: list[str]) -> str: ...
    def tag(self, image_id: str, tags: list[str]) -> None: ...


@dataclass
class BuildOptions:
    """The build's query options, checked by the API layer."""

    tags: list[str] = field(default_factory=list)
    target: str = ""
    build_args: dict[str, str | None] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    no_cache: bool = False
    pull: bool = False
    remove: bool = True
    network: str = "default"
    registry_auth: dict[str, RegistryCredentials] = field(default_factory=dict)   # by registry host


@dataclass
class State:
    """Where a stage stands: the image so far and what the stage declared."""

    name: str | None
    config: dict[str, Any]
    chain_ids: list[str]
    id: str
    cmd_set: bool = False
    args: dict[str, str | None] = field(default_factory=dict)
    changed: bool = False

    @property
    def rc(self) -> dict[str, Any]:
        rc: dict[str, Any] = self.config.setdefault("config", {})
        return rc


def config_id(config: dict[str, Any], diff_ids: list[str]) -> str:
    """The id an image of this config would have (as ImageStore.create_image computes it)."""
    full = dict(config)
    full["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    data = json.dumps(full, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Builder:
    """One build; `build()` returns the new image's id. Not thread-safe (one per request)."""

    def __init__(self, backend: BuildBackend, cache: BuildCache, context: Path, matcher: IgnoreMatcher,
                 dockerfile: Dockerfile, options: BuildOptions, emit: Emit) -> None:
        self.backend = backend
        self.cache = cache
        self.context = context
        self.matcher = matcher
        self.df = dockerfile
        self.opts = options
        self.out = build_output.Output(emit)
        self.stages: list[State] = []
        self.meta: dict[str, str | None] = {}
        self.used_args: set[str] = set()
        self.step = 0
        self.total = 0
        self.files = FileSteps(self)

    # -- the whole build ---------------------------------------------------------------
    def build(self) -> str:
        stages = self._stages_to_build()
        self.total = sum(1 + len(s.instructions) for s in stages) + (1 if self.opts.labels else 0)
        self._meta_args()
        state: State | None = None
        for index, stage in enumerate(stages):
            state = self._from(stage)
            for ins in stage.instructions:
                self._step(state, ins)
            if index == len(stages) - 1 and self.opts.labels:
                self._build_labels(state)
            self.stages.append(state)
        assert state is not None
        unused = sorted(k for k in self.opts.build_args
                        if k not in self.used_args and k not in self.meta and k not in PROXY_ARGS)
        if unused:
            self.out.stream(f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed\n")
        if state.changed:
            image_id = self.backend.finish(state.config, state.chain_ids, self.opts.tags)
        else:
            image_id = state.id
            self.backend.tag(image_id, self.opts.tags)
        self.out.aux(image_id)
        self.out.stream(f"Successfully built {build_output.short(image_id)}\n")
        for tag in self.opts.tags:
            self.out.stream(f"Successfully tagged {tag}\n")
        return image_id

    def _stages_to_build(self) -> list[Stage]:
        stages = list(self.df.stages)
        if not stages:
            raise InvalidArgument("the Dockerfile has no FROM instruction")
        if self.opts.target:
            names = [s.name for s in stages]
            target = self.opts.target.lower()
            if target not in names:
                raise InvalidArgument(f"failed to reach build target {self.opts.target} in Dockerfile")
            stages = stages[: names.index(target) + 1]
        return stages

    def _meta_args(self) -> None:
        for ins in self.df.meta_args:
            for key, value in parse_arg_defaults(ins.args, self.df.escape):
                given = self.opts.build_args.get(key)
                if given is not None:
                    self.meta[key] = given
                elif value is not None:
                    self.meta[key] = expand_word(value, self._meta_env(), self.df.escape)
                else:
                    self.meta[key] = None

    def _meta_env(self) -> dict[str, str]:
        return {k: v for k, v in self.meta.items() if v is not None}

    # -- FROM ---------------------------------------------------------------------------
    def _from(self, stage: Stage) -> State:
        self.step += 1
        text = f"FROM {stage.base}" + (f" AS {stage.name}" if stage.name else "")
        if stage.platform:
            text = f"FROM --platform={stage.platform} {text[5:]}"
        self.out.step(self.step, self.total, text)
        if stage.platform:
            platform = expand_word(stage.platform, self._meta_env(), self.df.escape)
            if platform.split("/")[:2] != ["linux", _engine_arch()]:
                raise InvalidArgument(f"FROM --platform={platform}: this engine builds for "
                                      f"linux/{_engine_arch()} only")
        base = expand_word(stage.base, self._meta_env(), self.df.escape)
        if not base:
            raise InvalidArgument(f"FROM on line {stage.line}: base name ({stage.base}) should not be blank")
        prior = next((s for s in reversed(self.stages) if s.name and s.name == base.lower()), None)
        if prior is not None:
            state = State(stage.name, copy.deepcopy(prior.config), list(prior.chain_ids), prior.id,
                          changed=prior.changed)
        elif base.lower() == "scratch":
            config = {"architecture": _engine_arch(), "os": "linux", "config": {}, "history": []}
            state = State(stage.name, config, [], config_id(config, []), changed=True)
        else:
            image = self.backend.base_image(base, self.opts.pull, self.out.emit)
            state = State(stage.name, copy.deepcopy(image.config), list(image.chain_ids), image.id)
        rc = state.rc
        if not any(e.startswith("PATH=") for e in rc.get("Env") or []):
            rc["Env"] = list(rc.get("Env") or []) + [DEFAULT_PATH]
            state.id = config_id(state.config, self.backend.diff_ids(state.chain_ids))
            state.changed = True
        self.out.stream(f" ---> {build_output.short(state.id)}\n")
        triggers = list(rc.get("OnBuild") or [])
        if triggers:
            self._onbuild(state, triggers)
        return state

    def _onbuild(self, state: State, triggers: list[str]) -> None:
        noun = "trigger" if len(triggers) == 1 else "triggers"
        self.out.stream(f"# Executing {len(triggers)} build {noun}\n")
        parsed = [parse_instruction(t, self.df.escape) for t in triggers]
        state.rc["OnBuild"] = None
        state.id = config_id(state.config, self.backend.diff_ids(state.chain_ids))
        state.changed = True
        for ins in parsed:
            self._run_instruction(state, ins)

    # -- one step ---------------------------------------------------------------------------
    def _step(self, state: State, ins: Instruction) -> None:
        self.step += 1
        self.out.step(self.step, self.total, ins.original)
        self._run_instruction(state, ins)

    def _run_instruction(self, state: State, ins: Instruction) -> None:
        kw = ins.keyword
        if kw == "RUN":
            self._run(state, ins)
        elif kw in ("COPY", "ADD"):
            self.files.copy(state, ins)
        elif kw == "WORKDIR":
            self.files.workdir(state, ins)
        elif kw in _CONFIG_ONLY:
            self._config_only(state, ins)
        elif kw == "FROM":
            raise InvalidArgument(f"FROM on line {ins.line} is not allowed here")
        else:
            raise InvalidArgument(f"Unknown instruction: {kw}")

    def env(self, state: State) -> dict[str, str]:
        """What ${VAR} sees: the stage's build args (with values), under the config's Env."""
        env = self._arg_values(state)
        for entry in state.rc.get("Env") or []:
            key, _, value = entry.partition("=")
            env[key] = value
        return env

    def _arg_values(self, state: State) -> dict[str, str]:
        values: dict[str, str] = {}
        for key, default in state.args.items():
            given = self.opts.build_args.get(key)
            if given is not None:
                values[key] = given
            elif default is not None:
                values[key] = default
            elif self.meta.get(key) is not None:
                values[key] = str(self.meta[key])
        for key in PROXY_ARGS:
            given = self.opts.build_args.get(key)
            if given is not None and key not in values:
                values[key] = given
        return values

    def words(self, state: State, ins: Instruction) -> list[str]:
        """The instruction's words, expanded: COPY/ADD/VOLUME's paths one by one, EXPOSE's
        split after expansion, the one-argument instructions' whole text as one word."""
        env = self.env(state)
        if ins.keyword in ("COPY", "ADD", "VOLUME"):
            return [expand_word(w, env, self.df.escape) for w in path_words(ins)]
        text = " ".join(ins.args)
        if ins.keyword == "EXPOSE":
            return expand_words(text, env, self.df.escape)
        if ins.keyword == "MAINTAINER":
            return [text]
        return [expand_word(text, env, self.df.escape)]

    def commit_step(self, state: State, created_by: str, layer: str | None, key: str) -> None:
        """Move the state on by one step (a layer or none) and remember it in the cache."""
        now = now_rfc3339()
        state.config["created"] = now
        entry: dict[str, Any] = {"created": now, "created_by": created_by}
        if layer is None:
            entry["empty_layer"] = True
        else:
            state.chain_ids.append(layer)
        state.config["history"] = list(state.config.get("history") or []) + [entry]
        for stale in ("container", "container_config", "rootfs"):
            state.config.pop(stale, None)
        state.id = config_id(state.config, self.backend.diff_ids(state.chain_ids))
        state.changed = True
        self.cache.put(key, CachedStep(copy.deepcopy(state.config), list(state.chain_ids)))
        self.out.stream(f" ---> {build_output.short(state.id)}\n")

    def cached(self, state: State, key: str) -> bool:
        """Take the step from the cache if it is there (and its layers still are)."""
        if self.opts.no_cache:
            return False
        hit = self.cache.get(key)
        if hit is None or not self.backend.layers_exist(hit.chain_ids):
            return False
        state.config = copy.deepcopy(hit.config)
        state.chain_ids = list(hit.chain_ids)
        state.id = config_id(state.config, self.backend.diff_ids(state.chain_ids))
        state.changed = True
        self.out.stream(" ---> Using cache\n")
        self.out.stream(f" ---> {build_output.short(state.id)}\n")
        return True

    # -- config-only instructions ------------------------------------------------------------
    def _config_only(self, state: State, ins: Instruction) -> None:
        kw = ins.keyword
        before = copy.deepcopy(state.config)
        rc = state.rc
        if kw == "ARG":
            comment = self._arg(state, ins)
        elif kw in ("ENV", "LABEL"):
            env = self.env(state)
            pairs = [(expand_word(k, env, self.df.escape), expand_word(v, env, self.df.escape))
                     for k, v in parse_key_values(ins.args, kw, self.df.escape)]
            comment = build_steps.apply_env(rc, pairs) if kw == "ENV" else build_steps.apply_label(rc, pairs)
        elif kw == "CMD":
            comment = build_steps.apply_cmd(rc, ins)
            state.cmd_set = True
        elif kw == "ENTRYPOINT":
            comment = build_steps.apply_entrypoint(rc, ins, state.cmd_set)
        elif kw == "HEALTHCHECK":
            comment = build_steps.apply_healthcheck(rc, ins)
        elif kw == "SHELL":
            comment = build_steps.apply_shell(rc, ins)
        elif kw == "ONBUILD":
            comment = build_steps.apply_onbuild(rc, ins)
        elif kw == "MAINTAINER":
            comment = build_steps.apply_maintainer(state.config, self.words(state, ins))
        else:
            comment = build_steps.WORD_HANDLERS[kw](rc, self.words(state, ins))
        created_by = " ".join(build_steps.shell_of(rc)) + " #(nop)  " + comment
        changed_config = state.config
        state.config = before
        key = step_key(state.id, created_by)
        if self.cached(state, key):
            return
        state.config = changed_config
        self.commit_step(state, created_by, None, key)

    def _arg(self, state: State, ins: Instruction) -> str:
        env = self.env(state)
        parts = []
        for key, value in parse_arg_defaults(ins.args, self.df.escape):
            expanded = expand_word(value, env, self.df.escape) if value is not None else None
            state.args[key] = expanded
            self.used_args.add(key)
            parts.append(key if value is None else f"{key}={expanded}")
        return "ARG " + " ".join(parts)

    # -- RUN ---------------------------------------------------------------------------------
    def _run(self, state: State, ins: Instruction) -> None:
        build_steps.check_flags(ins, ())
        rc = state.rc
        cmd = build_steps.command_of(rc, ins)
        args = self._arg_values(state)
        env_keys = {e.partition("=")[0] for e in rc.get("Env") or []}
        visible = {k: v for k, v in args.items() if k not in env_keys}
        recorded = sorted(f"{k}={v}" for k, v in visible.items() if k in state.args)
        created_by = " ".join(cmd)
        if recorded:
            created_by = f"|{len(recorded)} {' '.join(recorded)} {created_by}"
        key = step_key(state.id, created_by)
        if self.cached(state, key):
            return
        run_config = {
            "Cmd": cmd, "Entrypoint": [""], "Env": list(rc.get("Env") or []) +
            sorted(f"{k}={v}" for k, v in visible.items()),
            "User": rc.get("User") or "", "WorkingDir": rc.get("WorkingDir") or "",
            "Healthcheck": {"Test": ["NONE"]}, "Labels": {}, "OpenStdin": False, "Tty": False,
        }
        cid: list[str] = []

        def created(container_id: str) -> None:
            cid.append(container_id)
            self.out.stream(f" ---> Running in {build_output.short(container_id)}\n")

        code, layer = self.backend.run(RunRequest(
            state.config, list(state.chain_ids), run_config, self.opts.network, self.opts.remove,
            created, lambda data: self.out.stream(data.decode("utf-8", "replace"))))
        if code != 0:
            raise build_output.StepFailed(
                f"The command '{' '.join(cmd)}' returned a non-zero code: {code}", code)
        if cid and self.opts.remove:
            self.out.stream(f"Removing intermediate container {build_output.short(cid[0])}\n")
        self.commit_step(state, created_by, layer, key)

    def _build_labels(self, state: State) -> None:
        """`--label`: one more LABEL step at the end of the last stage, as dockerd adds it."""
        self.step += 1
        pairs = sorted(self.opts.labels.items())
        text = "LABEL " + " ".join(f'"{k}"=\'{v}\'' for k, v in pairs)
        self.out.step(self.step, self.total, text)
        before = copy.deepcopy(state.config)
        comment = build_steps.apply_label(state.rc, pairs)
        created_by = " ".join(build_steps.shell_of(state.rc)) + " #(nop)  " + comment
        after, state.config = state.config, before
        key = step_key(state.id, created_by)
        if self.cached(state, key):
            return
        state.config = after
        self.commit_step(state, created_by, None, key)

    def scratch(self) -> Path:
        path = self.backend.scratch_root / secrets.token_hex(8)
        path.mkdir(parents=True)
        return path


def _engine_arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)
