"""The batched sampler: prefill prompts in batches, decode a fixed batch of slots, refill as slots free up.

Shapes and state (``B`` = batch size = number of decode slots, ``T`` = max new tokens), all on
the model's device:

- ``tokens (B,) int64``: the last token of each slot, fed to the next step;
- ``positions (B,) int64``: the index of that token in its sequence;
- ``keys (B,)``, ``sample_indices (B,)``: the counters of the slot's work item (see
  :mod:`thinkfast.generate.sampling`);
- ``num_generated (B,) int64``: tokens generated so far (including the first, sampled from the prefill);
- ``out (B, T) int64``: the generated tokens;
- ``done (B,) bool`` / ``hit_eos (B,) bool``: finished rows (EOS or ``T`` tokens) and why.

One decode step (:meth:`Engine._decode_step`) runs ``model.step`` on every slot, samples on the
device, appends, and updates ``done`` for finished rows, all in place on fixed shapes with no host
synchronisation; on CUDA it is captured once in a CUDA graph and replayed. Finished rows stay
frozen (their position does not advance) until refilled. The host looks at ``done`` only every
``check_every`` steps: it hands finished samples out, checks stop strings and the answer rule on
the newly generated text, and prefills pending work into the free slots, so the batch stays full
(continuous batching).

Prefill (:meth:`Engine._start`) runs outside the graph: the prompts assigned in one round are
grouped by length (:func:`~thinkfast.generate.scheduler.plan_prefills`), each group is one
batched ``model.prefill`` (left-padded when lengths differ), and the first tokens of all the
round's slots are sampled in one call. With ``prefill_bucket > 1`` every prompt is left-padded to
a multiple of that many tokens, so prefill forwards come in a few shapes only: kernels that are
built per shape (Triton specialisations, attention plans) are built once, by warm-up prefills at
the start of :meth:`Engine.generate` on a GPU (:attr:`Engine.warmup_seconds`), not on the clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch

from thinkfast.errors import ThinkfastError
from thinkfast.generate.sampling import SamplingParams, counter_uniform, sample_tokens
from thinkfast.generate.scheduler import Assignment, SlotScheduler, plan_prefills
from thinkfast.generate.stepping import capture_cuda_graph, compile_and_warm
from thinkfast.generate.stops import CUT_REASONS, SlotMemory, StopChecker


@dataclass(frozen=True)
class Request:
    """One prompt to sample from: ``prompt_ids (L,) int64`` (any device), its 32-bit ``key``,
    and the sample indices still to generate for it."""

    prompt_ids: torch.Tensor
    key: int
    sample_indices: tuple[int, ...]


@dataclass
class Finished:
    """A finished sample. ``tokens`` are the generated ids (a final EOS included); ``stop_text``
    is the decoded text cut by the :class:`~thinkfast.generate.stops.StopChecker` when ``finish_reason``
    is ``"stop"`` (before the stop string) or ``"answer"`` (before the answer line's newline);
    ``seconds`` is the wall time attributed to the sample."""

    request: int
    sample_index: int
    tokens: list[int]
    finish_reason: str
    stop_text: str | None = None
    seconds: float = 0.0


@dataclass
class EngineStats:
    """Where one :meth:`Engine.generate` call spent its time (seconds, measured after device syncs)."""

    prefill_seconds: float = 0.0  # assigning work, prefilling it and sampling first tokens, per cycle
    decode_seconds: float = 0.0  # from the decode launch to the check's results on the host, per cycle
    decode_steps: int = 0
    prefills: int = 0  # prompts prefilled
    prefill_batches: int = 0  # model.prefill calls (batched forwards)
    cycles: int = 0  # prefill + check_every decode steps + one check
    handout_seconds: float = 0.0  # the caller's time with finished samples, while the device decodes (in decode)


@dataclass(frozen=True)
class EngineSettings:
    """Everything fixed for one engine (it shapes the cache and the captured step).

    ``max_seqlen`` (tokens) bounds prompt length + ``max_new_tokens``; ``check_every`` is the
    number of decode steps between host checks; ``eos_ids`` end a sample when sampled.
    ``prefill_tokens`` caps one batched prefill at that many (padded) prompt tokens;
    ``prefill_padding`` is the largest fraction of them that may be left padding (0: only prompts of
    exactly equal length share a prefill). See :func:`~thinkfast.generate.scheduler.plan_prefills`.
    ``prefill_bucket`` (tokens) left-pads every prompt to a multiple of it (capped at ``max_seqlen``),
    and those padded lengths are what ``plan_prefills`` groups; 1 (the default here; ``generate``'s
    recipe default is 64) pads only within a group.
    ``split_requests``: start a request before all its samples fit the free slots (see
    :class:`~thinkfast.generate.scheduler.SlotScheduler`); off, each request costs one prefill.
    ``overlap_prefill``: launch each cycle's decode steps first and the refills' prefills after them
    (see :meth:`Engine.generate`); off, slots are refilled before the cycle's decode steps.
    ``compile`` runs the decode step (model step, sampling, bookkeeping) through ``torch.compile``
    (see :func:`~thinkfast.generate.stepping.compile_step`) before it is captured, and, with
    ``compile_prefill`` too, has a model with ``compile_pointwise()`` run its prefills' elementwise work as
    compiled kernels (:mod:`thinkfast.models.pointwise`; ``compile_prefill`` off: the eager baseline).
    ``fuse_projections``: a model with ``fuse_projections()`` / ``unfuse_projections()`` runs fused (same
    values, fewer and aligned GEMMs; :mod:`thinkfast.models.fused`) or, off, unfused (the baseline).
    """

    batch_size: int
    max_seqlen: int
    max_new_tokens: int
    sampling: SamplingParams
    seed: int = 0
    eos_ids: tuple[int, ...] = ()
    check_every: int = 16
    cuda_graphs: bool = True
    dtype: torch.dtype | None = None
    state_dtype: torch.dtype | None = None
    prefill_tokens: int = 32768
    prefill_padding: float = 0.25
    prefill_bucket: int = 1
    split_requests: bool = False
    overlap_prefill: bool = False
    compile: bool = False
    compile_prefill: bool = True
    fuse_projections: bool = True


class Engine:
    """Continuous-batching sampler over a ``ThinkfastLM``-like model.

    The model provides ``allocate_cache(batch_size, max_seqlen, dtype=, state_dtype=)``,
    ``prefill(prompt_ids (P, L), cache, slots (S,), rows (S,), lengths (P,) | None) -> logits (S, V)`` and
    ``step(tokens (B,), positions (B,), cache) -> logits (B, V)`` (docs/architecture.md); see
    :attr:`EngineSettings.fuse_projections` for models that can fuse their projections.
    """

    def __init__(self, model: torch.nn.Module, settings: EngineSettings, stop_checker: StopChecker | None = None):
        self.model = model
        self.settings = settings
        self.stop_checker = stop_checker if stop_checker else None
        self.device = next(model.parameters()).device
        if hasattr(model, "fuse_projections"):
            model.fuse_projections() if settings.fuse_projections else model.unfuse_projections()
        if hasattr(model, "compile_pointwise"):
            model.compile_pointwise(settings.compile and settings.compile_prefill)
        B, T = settings.batch_size, settings.max_new_tokens
        if T >= settings.max_seqlen:
            raise ThinkfastError(f"generate.max_new_tokens ({T}) leaves no room for a prompt in a "
                                 f"{settings.max_seqlen}-token cache; lower generate.max_new_tokens")
        if settings.prefill_tokens < 1 or settings.prefill_bucket < 1 or not 0.0 <= settings.prefill_padding < 1.0:
            raise ThinkfastError(f"engine prefill_tokens={settings.prefill_tokens} and prefill_bucket="
                                 f"{settings.prefill_bucket} must be >= 1 and prefill_padding="
                                 f"{settings.prefill_padding} in [0, 1)")
        kwargs = {}
        if settings.dtype is not None:
            kwargs["dtype"] = settings.dtype
        if settings.state_dtype is not None:
            kwargs["state_dtype"] = settings.state_dtype
        self.cache = model.allocate_cache(B, settings.max_seqlen, **kwargs)
        dev = self.device
        self.tokens = torch.zeros(B, dtype=torch.long, device=dev)
        self.positions = torch.zeros(B, dtype=torch.long, device=dev)
        self.keys = torch.zeros(B, dtype=torch.long, device=dev)
        self.sample_indices = torch.zeros(B, dtype=torch.long, device=dev)
        self.num_generated = torch.zeros(B, dtype=torch.long, device=dev)
        self.out = torch.zeros(B, T, dtype=torch.long, device=dev)
        self.done = torch.ones(B, dtype=torch.bool, device=dev)
        self.hit_eos = torch.zeros(B, dtype=torch.bool, device=dev)
        self.eos_ids = torch.tensor(settings.eos_ids, dtype=torch.long, device=dev)
        self.stats = EngineStats()
        self.graph_error: str | None = None  # why the step could not be captured, if it could not
        self._graph: torch.cuda.CUDAGraph | None = None
        self.compile_seconds = 0.0  # compiling the step (its first call) and the prefill's pointwise kernels
        self.compile_error: str | None = None  # why the step could not be compiled, if it could not
        self._step: Callable[[], object] = self._decode_step
        self.warmup_seconds = 0.0  # spent in warm-up prefills (GPU with prefill_bucket > 1 only), before the clock
        # with overlap_prefill on CUDA, host-to-device copies come from pinned memory without a stream sync
        self._async_copies = settings.overlap_prefill and dev.type == "cuda"
        self._warm_widths: set[int] = set()
        if settings.compile:  # the first call runs on idle slots: prefill overwrites whatever it leaves
            compiled = compile_and_warm(self._decode_step, dev)
            self._step, self.compile_seconds, self.compile_error = compiled.step, compiled.seconds, compiled.error
            if settings.compile_prefill and dev.type == "cuda":
                self.compile_seconds += self._warm_up_pointwise()
        if settings.cuda_graphs and dev.type == "cuda":
            self._graph, self.graph_error = capture_cuda_graph(self._step, dev)

    # ------------------------------------------------------------------ device-side pieces

    @torch.no_grad()
    def _decode_step(self) -> None:
        """One token for every slot, in place; finished rows are left unchanged. No host sync."""
        s = self.settings
        logits = self.model.step(self.tokens, self.positions, self.cache)  # (B, V)
        uniforms = counter_uniform(s.seed, self.keys, self.sample_indices, self.num_generated)
        nxt = sample_tokens(logits, uniforms, s.sampling)  # (B,)
        live = ~self.done
        col = self.num_generated.clamp(max=s.max_new_tokens - 1).unsqueeze(1)  # (B, 1)
        kept = self.out.gather(1, col).squeeze(1)
        self.out.scatter_(1, col, torch.where(live, nxt, kept).unsqueeze(1))
        is_eos = (nxt.unsqueeze(1) == self.eos_ids).any(dim=1) & live
        self.num_generated.add_(live.long())
        self.hit_eos.logical_or_(is_eos)
        self.done.logical_or_(is_eos | (self.num_generated >= s.max_new_tokens))
        self.tokens.copy_(torch.where(live, nxt, self.tokens))
        self.positions.add_(live.long())

    @property
    def compiled(self) -> bool:
        """Whether the decode step runs compiled (asked for, and compilation worked)."""
        return self.settings.compile and self.compile_error is None

    @property
    def timings(self) -> dict[str, float]:
        """The last :meth:`generate` call's :class:`EngineStats`, plus the warm-up prefills' seconds so far."""
        return {**asdict(self.stats), "warmup_seconds": self.warmup_seconds}

    @property
    def uses_cuda_graph(self) -> bool:
        return self._graph is not None

    def decode(self, steps: int) -> None:
        """Run ``steps`` decode steps (graph replays on CUDA)."""
        for _ in range(steps):
            if self._graph is not None:
                self._graph.replay()
            else:
                self._step()

    @torch.no_grad()
    def _start(self, requests: Sequence[Request], assignments: Sequence[Assignment]) -> None:
        """Prefill the assigned requests' prompts into their slots and sample every slot's first token.

        Prompts are batched by :func:`plan_prefills` (one ``model.prefill`` per group, outside the
        captured step); all first tokens are then sampled in one call.
        """
        s = self.settings
        prompts = [requests[a.request].prompt_ids.reshape(-1).long() for a in assignments]
        lengths = [int(p.numel()) for p in prompts]
        for n in lengths:
            if n + s.max_new_tokens > s.max_seqlen:
                raise ThinkfastError(
                    f"a prompt of {n} tokens plus generate.max_new_tokens={s.max_new_tokens} exceeds the "
                    f"{s.max_seqlen}-token cache; lower generate.max_new_tokens or shorten the prompt template")
        padded = [self._bucketed(n) for n in lengths]
        groups = plan_prefills(padded, s.prefill_tokens, s.prefill_padding)
        logits: list[torch.Tensor] = []
        order: list[int] = []  # assignment index of each prefilled group member, in logits order
        for group in groups:
            logits.append(self._prefill_group([prompts[i] for i in group], [assignments[i].slots for i in group],
                                              max(padded[i] for i in group)))
            order += group
        slots = self._upload([slot for i in order for slot in assignments[i].slots])
        samples = self._upload([k for i in order for k in assignments[i].sample_indices])
        keys = self._upload([requests[assignments[i].request].key for i in order for _ in assignments[i].slots])
        starts = self._upload([lengths[i] for i in order for _ in assignments[i].slots])
        zero = torch.zeros_like(slots)
        first = sample_tokens(torch.cat(logits), counter_uniform(s.seed, keys, samples, zero), s.sampling)  # (S,)
        is_eos = (first.unsqueeze(1) == self.eos_ids).any(dim=1)
        self.tokens[slots] = first
        self.positions[slots] = starts
        self.keys[slots] = keys
        self.sample_indices[slots] = samples
        self.num_generated.index_fill_(0, slots, 1)  # a scalar set through indexing copies it: a sync
        self.out[slots, 0] = first
        self.hit_eos[slots] = is_eos
        self.done[slots] = is_eos | (s.max_new_tokens <= 1)
        self.stats.prefills += len(assignments)
        self.stats.prefill_batches += len(groups)

    def _bucketed(self, length: int) -> int:
        """The padded length a prompt of ``length`` tokens is prefilled at (``prefill_bucket`` multiple)."""
        bucket = self.settings.prefill_bucket
        return min(-(-length // bucket) * bucket, self.settings.max_seqlen)

    def _prefill_group(self, prompts: list[torch.Tensor], slots: list[tuple[int, ...]], width: int) -> torch.Tensor:
        """One batched prefill: ``prompts[p]`` ``(L_p,)`` left-padded to ``width`` tokens, into ``slots[p]``;
        returns logits ``(S, V)`` (``S`` = all slots, in the order given)."""
        flat = self._upload([slot for group in slots for slot in group])
        sizes = [len(p) for p in prompts]
        masked = self.settings.prefill_bucket > 1 or min(sizes) < width  # bucketed: one code path for all shapes
        if len(prompts) == 1 and not masked:  # one forward of (1, L), its state copied into every slot
            return self.model.prefill(self._upload(prompts[0]), self.cache, flat)
        # (P, width), each prompt at the right end; built where the prompts are (no device-to-host copy)
        ids = torch.zeros(len(prompts), width, dtype=torch.long, device=prompts[0].device)
        for p, prompt in enumerate(prompts):
            ids[p, width - len(prompt):] = prompt.to(ids.device)
        rows = self._upload([p for p, group in enumerate(slots) for _ in group])
        lengths = self._upload(sizes) if masked else None
        return self.model.prefill(self._upload(ids), self.cache, flat, rows, lengths)

    def _upload(self, values: list[int] | torch.Tensor) -> torch.Tensor:
        """``values`` as a long tensor on the device; with ``overlap_prefill`` on CUDA, copied from pinned
        memory without waiting for the work already queued (a pageable copy would wait for it)."""
        host = torch.as_tensor(values, dtype=torch.long)
        if self._async_copies and host.device.type == "cpu":
            return host.pin_memory().to(self.device, non_blocking=True)
        return host.to(self.device)

    def _warm_up_pointwise(self) -> float:
        """Have a model that compiles its large prefills' pointwise work (``warm_pointwise``) compile it
        now, at the largest prefill this engine can make (prompts of ``max_seqlen - max_new_tokens`` tokens,
        as many as ``prefill_tokens`` and the slots allow), not inside the first timed prefill; when that
        is one prompt, also at two prompts of half the length (dynamo specialises a batch of one, so
        groups of several prompts need their own). Returns the seconds it took (0 when the model has
        nothing to compile at those sizes)."""
        s = self.settings
        if not hasattr(self.model, "warm_pointwise"):
            return 0.0
        longest = s.max_seqlen - s.max_new_tokens
        prompts = max(1, min(s.batch_size, s.prefill_tokens // longest))
        shapes = [(prompts, longest)]
        if prompts == 1 and s.batch_size > 1 and longest > 1:
            shapes.append((2, longest // 2))
        start = time.perf_counter()
        ran = [self.model.warm_pointwise(self.cache, p, length) for p, length in shapes]
        if not any(ran):
            return 0.0
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    @torch.no_grad()
    def _warm_up_prefill(self, widths: set[int], most: int = 16) -> None:
        """Prefill dummy prompts at each padded width real prompts will take (one prompt, and two, as
        prefills come), into idle slots 0 and 1 (the first real prefill overwrites them), so that per-shape
        kernel builds happen here and not on the clock. At most ``most`` widths, spread over the range;
        adds the seconds to :attr:`warmup_seconds`."""
        todo = sorted(widths - self._warm_widths)
        if len(todo) > most:
            todo = [todo[round(i * (len(todo) - 1) / (most - 1))] for i in range(most)]
        if not todo:
            return
        start = time.perf_counter()
        for width in todo:
            dummy = torch.ones(max(width - 1, 1), dtype=torch.long)
            self._prefill_group([dummy], [(0,)], width)
            if self.settings.batch_size > 1:
                self._prefill_group([dummy, dummy[:1]], [(0,), (1,)], width)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._warm_widths.update(todo)
        self.warmup_seconds += time.perf_counter() - start

    # ------------------------------------------------------------------ host loop

    def generate(self, requests: Sequence[Request],
                 on_progress: Callable[[int], None] | None = None) -> Iterator[Finished]:
        """Run every request's samples; yield each finished sample.

        The samples a check finds finished are yielded during the next cycle, right after its decode
        steps are launched, so the caller's work on them (decoding text, writing files) overlaps the
        device's decoding instead of leaving the device idle. With ``overlap_prefill`` a cycle launches the running
        slots' decode steps first and then the refills' prefills (queued behind them on the same stream,
        their inputs uploaded without a sync), so the prefills' launch time overlaps the decoding; the
        refilled slots decode from the next cycle. :class:`EngineStats` then counts differently:
        ``prefill_seconds`` is host time only (the decode launch and the prefills' launch), the
        prefills' device time falls into ``decode_seconds``, a cycle that starts with no slot running
        has no decode steps, and a refilled slot is charged the cycle of its prefill.
        ``on_progress(tokens)`` is called after every check with the tokens generated since the last one.
        """
        s = self.settings
        sched = SlotScheduler(s.batch_size, ((i, r.sample_indices) for i, r in enumerate(requests)),
                              split=s.split_requests)
        seen: list[list[int]] = [[] for _ in range(s.batch_size)]  # each slot's tokens on the host (stop checks)
        memories = [SlotMemory() for _ in range(s.batch_size)]  # what the stop checker keeps per slot
        seconds = [0.0] * s.batch_size
        last_count = torch.zeros(s.batch_size, dtype=torch.long)
        handout: list[Finished] = []  # finished at the last check, yielded during the next decode
        self.stats = EngineStats()
        if self.device.type == "cuda" and s.prefill_bucket > 1:
            self._warm_up_prefill({self._bucketed(r.prompt_ids.numel()) for r in requests})
        while not sched.idle:
            tick = time.perf_counter()
            # overlap: the running slots' decode steps first, so the refills' prefills (launched from
            # Python, mostly host time for small models) queue behind them while the device decodes
            decoding = not s.overlap_prefill or bool(sched.running)
            if s.overlap_prefill and decoding:
                self.decode(s.check_every)
            assignments = sched.assign()
            if assignments:
                self._start(requests, assignments)
            for assignment in assignments:
                for slot in assignment.slots:
                    seconds[slot], last_count[slot] = 0.0, 0
                    seen[slot], memories[slot] = [], SlotMemory()
            if assignments and self.device.type == "cuda" and not s.overlap_prefill:
                torch.cuda.synchronize(self.device)
            prefilled = time.perf_counter()
            if not s.overlap_prefill:
                self.decode(s.check_every)  # on a GPU: graph replays, launched without waiting
            if handout:  # the previous check's samples, while the device works
                launched = time.perf_counter()
                for item in handout:
                    yield item
                handout = []
                self.stats.handout_seconds += time.perf_counter() - launched
            busy = sorted(sched.running)
            finished, counts = self._harvest(busy, seen, memories)
            tock = time.perf_counter()
            self.stats.prefill_seconds += prefilled - tick
            self.stats.decode_seconds += tock - prefilled
            self.stats.decode_steps += s.check_every if decoding else 0
            self.stats.cycles += 1
            share = (tock - tick) / max(len(busy), 1)
            for slot in busy:
                seconds[slot] += share
            if on_progress is not None:
                idx = torch.tensor(busy, dtype=torch.long)
                on_progress(int((counts[idx] - last_count[idx]).sum()))
                last_count[idx] = counts[idx]
            if finished:
                stopped = [slot for slot, item in finished.items() if item.finish_reason in CUT_REASONS]
                if stopped:
                    self.done[torch.tensor(stopped, device=self.device)] = True
                for slot, item in finished.items():
                    item.request, item.sample_index = sched.release(slot)
                    item.seconds = seconds[slot]
                    handout.append(item)
        yield from handout

    def _harvest(self, busy: list[int], seen: list[list[int]],
                 memories: list[SlotMemory]) -> tuple[dict[int, Finished], torch.Tensor]:
        """One host sync: the samples that finished among ``busy`` slots (by slot), and every slot's token count.

        With a stop checker every busy slot is watched, and ``seen[slot]`` (the slot's tokens on the host,
        all checked for stops at earlier checks) is extended by only the tokens generated since the last
        check, in one small transfer for all slots.
        """
        B = self.settings.batch_size
        both = torch.cat([self.num_generated, self.done.long(), self.hit_eos.long()]).cpu()  # the one sync
        counts, done, hit_eos = both[:B], both[B: 2 * B].bool(), both[2 * B:].bool()
        watch = busy if self.stop_checker else [b for b in busy if done[b]]
        if not watch:
            return {}, counts
        checked = [len(seen[slot]) for slot in watch]  # leading tokens known not to stop
        if self.stop_checker:
            for slot, fresh in zip(watch, self._fresh_tokens(watch, counts, checked), strict=True):
                seen[slot].extend(fresh)
            rows = [seen[slot] for slot in watch]  # each exactly counts[slot] long
        else:
            idx = torch.tensor(watch, dtype=torch.long, device=self.device)
            rows = [row[: int(counts[slot])] for slot, row in
                    zip(watch, self.out[idx, : int(counts[watch].max())].cpu().tolist(), strict=True)]
        finished: dict[int, Finished] = {}
        for slot, tokens, known in zip(watch, rows, checked, strict=True):
            if self.stop_checker:
                found = self.stop_checker.first_stop(tokens, known, memories[slot])
                if found is not None:
                    finished[slot] = Finished(-1, -1, tokens[: found.t], found.reason, found.text)
                    continue
            if done[slot]:
                finished[slot] = Finished(-1, -1, list(tokens), "eos" if hit_eos[slot] else "length")
        return finished, counts

    def _fresh_tokens(self, watch: list[int], counts: torch.Tensor, checked: list[int]) -> list[list[int]]:
        """Each watched slot's tokens past the ``checked`` ones already on the host (one count per slot of
        ``watch``), in one transfer of ``(len(watch), most new tokens of a slot)``."""
        known = torch.tensor(checked, dtype=torch.long)
        fresh = counts[watch] - known
        most = int(fresh.max())
        if most <= 0:
            return [[] for _ in watch]
        rows_cols = torch.stack([torch.tensor(watch, dtype=torch.long), known]).to(self.device)  # one copy
        last = self.settings.max_new_tokens - 1
        cols = (rows_cols[1, :, None] + torch.arange(most, device=self.device)).clamp(max=last)
        block = self.out[rows_cols[0, :, None], cols].cpu().tolist()
        return [row[:n] for row, n in zip(block, fresh.tolist(), strict=True)]
