"""Which model and LoRA adapter to serve, checked before they are loaded, and what a reload changes.

A model file is test-loaded by llama.cpp in a child process before the server loads it (`check_model`),
once per file version (path, size, mtime), and a pass is remembered across starts; the promoted adapter
is checked the same way against the model it was trained for. A file that fails its check is never
loaded into the server: the user is told once why, and the last good files keep serving.

Messages go through `notices`: any object with `tell(message, level, key=None)` and `forget(key)`
(the pipeline's `Notices`), so this module knows nothing of how the user is told.
"""

from __future__ import annotations

import os
from pathlib import Path

from hindsight.engine.backend import BackendError
from hindsight.engine.llama_backend import LlamaBackend, adapter_name
from hindsight.engine.model import check_model, is_verified, record_verified, resolve_model
from hindsight.engine.model import check_adapter, gguf_sha256
from hindsight.engine.adapters import RegistryError, adapters_dir, current_adapter, current_name
from hindsight.engine.profiles import Profile, ProfileError, from_template
from hindsight.engine.servers import connect
from hindsight.options import Options


def api_key(options: Options) -> str | None:
    """The model server's API key: `apiKey`, else the environment variable `apiKeyEnv` names."""
    if options.api_key:
        return options.api_key
    return os.environ.get(options.api_key_env) or None if options.api_key_env else None


def stat_key(path: Path) -> tuple:
    """One version of a file: its path, size and mtime (a file rewritten or replaced gets a new key)."""
    try:
        st = Path(path).stat()
        return (str(path), st.st_size, st.st_mtime_ns)
    except OSError:
        return (str(path), None, None)


class ModelLoader:
    def __init__(self, options: Options, notices):
        self.options = options
        self.notices = notices
        self.adapter: str | None = None  # the version name of the adapter being served
        self._model_checks: dict[tuple, str | None] = {}  # a model file's stat key → check_model's verdict
        self._adapter_checks: dict[tuple, str | None] = {}  # (adapter, model) stat keys → check_adapter's verdict
        self._loaded: tuple | None = None  # stat keys of the model and adapter files being served

    def load(self):
        """The backend the options name, with the promoted adapter when there is a good one. BackendError
        (one line) when there is no model to serve."""
        opts = self.options
        if opts.backend != "embedded":
            return connect(opts.backend, opts.base_url, model=opts.model.name, api_key=api_key(opts),
                           timeout_s=opts.timeout_s, profile=self.profile())
        model_path = self.checked_model()
        return self.load_files(model_path, self.find_adapter(model_path))

    def plan_reload(self, serving: str) -> tuple[Path, Path | None] | None:
        """The model and adapter files to serve instead of those being served, or None to keep serving
        them: the same files, or new ones that fail their checks (the user is told, `serving` naming what
        stays). An adapter that fails its check beside a new model file is dropped: the new model is
        served without it."""
        try:
            model_path = self.checked_model()
        except BackendError as exc:
            self.notices.tell(f"hindsight: {exc}; {serving}", "error", key=f"reload:{exc}")
            return None
        adapter, problem = self.promoted_adapter(model_path)
        same_model = self._loaded is not None and self._loaded[0] == stat_key(model_path)
        if problem and same_model:  # keep the model and the adapter (or none) it runs with
            self.notices.tell(f"hindsight: {problem}; {serving}", "warning", key=f"adapter:{problem}")
            return None
        if problem:
            self._adapter_problem(problem)
        if (stat_key(model_path), stat_key(adapter) if adapter else None) == self._loaded:
            return None  # the same files: nothing to load
        return model_path, adapter

    def forget_loaded(self) -> None:
        """The files being served are let go (before new ones are loaded)."""
        self.adapter = self._loaded = None

    def checked_model(self) -> Path:
        """The model file to serve, once llama.cpp has test-loaded it in a child process. BackendError
        with one line when it cannot be served."""
        model_path = resolve_model(self.options.model.path)
        key = stat_key(model_path)
        if key not in self._model_checks:
            self._model_checks[key] = check_model(model_path)
        if self._model_checks[key]:
            raise BackendError(self._model_checks[key])
        return model_path

    def load_files(self, model_path: Path, adapter: Path | None) -> LlamaBackend:
        """The llama.cpp backend for checked files; an adapter it cannot apply after all is dropped."""
        opts = self.options
        kwargs = dict(n_ctx=opts.n_ctx, n_threads=opts.n_threads, kv_reuse=opts.completion.kv_reuse,
                      profile=self.profile(), stop=opts.model.stop)
        try:
            backend = LlamaBackend(model_path, lora_path=adapter, **kwargs)
        except BackendError as exc:
            if adapter is None:
                raise
            self._adapter_problem(f"{exc}")
            backend = LlamaBackend(model_path, **kwargs)
        self.adapter = adapter_name(backend.lora_path) if backend.lora_path else None
        self._loaded = (stat_key(model_path), stat_key(backend.lora_path) if backend.lora_path else None)
        return backend

    def profile(self) -> Profile | None:
        """The profile `model.template` names; None: the model's vocabulary (or a server model's name)
        decides. BackendError for a template that cannot make a prompt."""
        try:
            return from_template(self.options.model.template)
        except ProfileError as exc:
            raise BackendError(str(exc)) from None

    def find_adapter(self, model_path: Path) -> Path | None:
        """The promoted LoRA adapter for this model file (`promoted_adapter`), or None, and the user is
        told once why not."""
        path, problem = self.promoted_adapter(model_path)
        if problem:
            self._adapter_problem(problem)
        return path

    def promoted_adapter(self, model_path: Path) -> tuple[Path | None, str | None]:
        """(the promoted LoRA adapter for this model file, None) if the `adapter` option is on and it
        passes `check_adapter` (a test load in a child process, once per adapter and model version, a
        pass remembered across starts); (None, None) when there is none; (None, why) when it is bad."""
        if not self.options.adapter:
            return None, None
        directory = adapters_dir()
        try:
            if self.options.adapter_path:
                path = Path(self.options.adapter_path).expanduser()
                problem = None if path.is_file() else f"adapter: no file at {path}"
            elif current_name(directory) is None:
                return None, None  # nothing promoted: no need to hash the model
            else:
                path, problem = current_adapter(directory, gguf_sha256(model_path))
            if path is not None and problem is None:
                key = (stat_key(path), stat_key(model_path))
                if key not in self._adapter_checks:
                    verdict = None if is_verified(model_path, path) else check_adapter(path, model_path)
                    if verdict is None:
                        record_verified(model_path, path)
                    self._adapter_checks[key] = verdict
                verdict = self._adapter_checks[key]
                problem = verdict and f"adapter {path.parent.name}: {verdict}"
        except RegistryError as exc:
            path, problem = None, f"adapter: {exc}"
        except Exception as exc:  # an unreadable file never costs the completions
            path, problem = None, f"adapter: {type(exc).__name__}: {exc}"
        return (None, " ".join(problem.split())) if problem else (path, None)

    def _adapter_problem(self, problem: str) -> None:
        problem = " ".join(problem.split())
        self.notices.tell(f"hindsight: {problem}; serving the base model", "warning", key=f"adapter:{problem}")
