"""The synthetic corpus generator behind `thunder corpus make`.

The plan (which voice says which sentence, with which seed, in which split) is a pure function of the
settings, so a run is deterministic for a seed and can resume: clips already written are skipped. Clips are
made by a pool of worker processes (2 by default), each doing: synthesize -> pad with silence -> align ->
articulate -> free motion -> close the lips on the head -> degrade the audio like a real recording -> write.
Alignment and motion are made from the clean speech, so the degradation never changes the motion. The index is written at the end (also after
an interruption), from the clips on disk.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from backend.progress import ProgressBar
from training.corpus.acoustics import CLEAN_FRACTION
from training.corpus.errors import CorpusError, ThunderError
from training.corpus.format import (SAMPLE_RATE, Clip, ClipMeta, clip_is_written, frames_for_samples,
                                    prepare_output, read_meta, write_clip, write_index)
from training.corpus.text import make_sentences, read_sentences
from training.corpus.voices import ENGINES, VoiceConfig, check_voice, choose_voices, split_by_voice

SETTINGS_FILE = "make_settings.json"


@dataclass
class MakeSettings:
    """Everything that decides a corpus's content. Workers and the output folder do not."""

    clips: int = 100
    voices: int = 40                     # how many voice configurations to draw (ignored with voice_specs)
    seed: int = 0
    engines: tuple[str, ...] = ENGINES
    voice_specs: tuple[str, ...] = ()    # explicit voice configurations (VoiceConfig.parse)
    head: str = "builtin"
    grid_fraction: float = 0.4          # generated sentences only (no sentences file)
    sentences: str | None = None        # a sentences file (text.read_sentences); None: generated sentences
    augment: bool = True                # degrade the audio like real recordings (acoustics.py)
    clean_fraction: float = CLEAN_FRACTION
    val_fraction: float = 0.1
    test_fraction: float = 0.1

    def to_json(self) -> dict:
        d = asdict(self)
        d["engines"], d["voice_specs"] = list(self.engines), list(self.voice_specs)
        return d


@dataclass
class Job:
    clip_id: str
    voice: str
    text: str                            # the words the aligner reads
    kind: str
    split: str
    seed: list[int] = field(default_factory=list)
    spoken: str = ""                     # what the engine reads (punctuated); the words when empty
    augment: bool = True
    clean_fraction: float = CLEAN_FRACTION


def plan(settings: MakeSettings) -> tuple[list[Job], list[VoiceConfig], dict[str, str]]:
    """The corpus's clips, voices and splits. Raises EngineMissingError or VoiceMissingError first."""
    if settings.voice_specs:
        configs = [VoiceConfig.parse(s) for s in settings.voice_specs]
    else:
        configs = choose_voices(settings.voices, settings.seed, settings.engines)
    if not configs:
        raise CorpusError("no voice configurations: give --voices N with an installed engine, or --voice SPEC")
    for c in configs:
        check_voice(c)
    splits = split_by_voice(configs, settings.seed, settings.val_fraction, settings.test_fraction)
    sentences = make_sentences(settings.clips, settings.seed, settings.grid_fraction, settings.sentences)
    order = np.random.default_rng([settings.seed, 0x0BDE]).permutation(len(configs))
    jobs = []
    for i, (kind, spoken, text) in enumerate(sentences):
        config = configs[order[i % len(configs)]]
        jobs.append(Job(f"c{i:05d}", config.id, text, kind, splits[config.id], [settings.seed, i], spoken,
                        settings.augment, settings.clean_fraction))
    return jobs, configs, splits


# ------------------------------------------------------------------------------------------------ one clip
_worker_state: dict = {}


def _init_worker(head_spec: str, sentences_file: str | None = None) -> None:
    import torch

    torch.set_num_threads(1)
    from backend.head import load_head
    from training.corpus.articulation import ExpressionMap

    head = load_head(head_spec)
    _worker_state.update(head=head, expr_map=ExpressionMap(list(head.expression_names)), out=None,
                         babble=babble_sentences(sentences_file))


def babble_sentences(sentences_file: str | None) -> tuple[str, ...]:
    """What background talkers say: the sentences file's sentences, or generated GRID sentences."""
    if sentences_file:
        return tuple(spoken for spoken, _ in read_sentences(sentences_file))
    return tuple(text for _, text, _ in make_sentences(200, 0, grid_fraction=1.0))


def make_clip(job: Job, head, expr_map, babble: tuple[str, ...] = ()) -> Clip:
    """Make one clip (deterministic for the job's seed). The motion is the same with or without augmentation."""
    from training.corpus.acoustics import degrade, draw_acoustics
    from training.corpus.align import align
    from training.corpus.articulation import Style, articulate, close_lips
    from training.corpus.free_motion import free_motion
    from training.corpus.synth import synthesize

    rng = np.random.default_rng(job.seed)
    config = VoiceConfig.parse(job.voice)
    # This clip's speaking rate and pitch vary around the voice configuration's, through the engine's own
    # controls (the alignment is made on what the engine spoke, so it stays right).
    prosody = np.random.default_rng([*job.seed, 0x9A7E])
    clip_rate, clip_pitch = round(float(prosody.uniform(0.9, 1.12)), 3), round(float(prosody.normal(0, 1.0)), 2)
    spoken_by = replace(config, rate=config.rate * clip_rate, pitch=config.pitch + clip_pitch)
    speech = synthesize(spoken_by, job.spoken or job.text)
    speech = speech / max(float(np.abs(speech).max()), 1e-6) * rng.uniform(0.4, 0.9)
    lead, tail = (int(rng.uniform(a, b) * SAMPLE_RATE) for a, b in ((0.15, 0.5), (0.2, 0.6)))
    audio = np.concatenate([np.zeros(lead), speech, np.zeros(tail)]).astype(np.float32)
    audio += rng.normal(0.0, 1e-3, audio.size).astype(np.float32)  # a noise floor (-60 dB), as rooms have
    words, phones = align(audio, job.text)
    n_frames = frames_for_samples(audio.size)
    style = Style.draw(rng)
    expression, jaw, contact = articulate(head, phones, n_frames, style, expr_map)
    free = free_motion(rng, audio, phones, n_frames, expr_map)
    expression = np.clip(expression + free.expression, 0.0, 1.0)
    jaw[:, 0] += free.jaw
    expression = close_lips(head, expression, jaw, contact)
    # The recording: degraded after the motion was made from the clean speech, from its own generator.
    acoustics = (draw_acoustics(np.random.default_rng([*job.seed, 0xAC05]), job.clean_fraction) if job.augment
                 else {"clean": True})
    audio = degrade(audio, acoustics, babble)
    meta = ClipMeta(
        id=job.clip_id, head={"name": head.name, "identity": head.identity}, speaker=config.id,
        split=job.split, n_frames=n_frames, n_samples=audio.size, emotion=free.emotion, voice=config.to_json(),
        text=job.text, words=words, phones=phones, source="synthetic",
        extra={"sentence_kind": job.kind, "seed": job.seed, "voice_group": config.group,
               "style": asdict(style), "blinks": free.blinks, "clip_rate": clip_rate, "clip_pitch": clip_pitch,
               "upper_face": free.character, "acoustics": acoustics,
               **({"spoken_text": job.spoken} if job.spoken and job.spoken != job.text else {})},
    )
    return Clip(meta=meta, audio=audio, expression=expression.astype(np.float32), jaw=jaw.astype(np.float32),
                neck=free.neck.astype(np.float32), eyes=free.eyes.astype(np.float32))


def _run_job(args) -> tuple[str, float, str | None]:
    job, out = args
    try:
        clip = make_clip(job, _worker_state["head"], _worker_state["expr_map"], _worker_state["babble"])
        write_clip(out, clip)
        return job.clip_id, clip.meta.seconds, None
    except ThunderError as exc:
        return job.clip_id, 0.0, f"clip {job.clip_id} ({job.voice}): {exc}"


# ------------------------------------------------------------------------------------------------ the run
class Progress:
    """The corpus run's progress: clips, hours of speech, speed and failures on one bar."""

    def __init__(self, total: int, stream=None):
        self.bar = ProgressBar(total, stream=stream)
        self.done = self.failed = 0
        self.seconds = 0.0

    def update(self, seconds: float, failed: bool) -> None:
        self.done += 1
        self.failed += failed
        self.seconds += seconds
        speed = self.seconds / max(time.monotonic() - self.bar.start, 1e-9)
        self.bar.update(self.done, f"clips  {self.seconds / 3600:.2f} h speech  {speed:.1f} h/h  "
                                   f"{self.failed} failed")

    def close(self) -> None:
        self.bar.close()


def make_corpus(out: str | Path, settings: MakeSettings, workers: int = 2, progress: bool = True,
                log=print) -> dict:
    """Make (or finish) the corpus in `out`. Returns a summary: clips made now and before, failures, hours
    of speech made now, wall time, and hours of speech per hour of compute."""
    from backend.head import load_head

    jobs, configs, splits = plan(settings)
    head = load_head(settings.head)
    out = prepare_output(out)
    settings_path = out / SETTINGS_FILE
    if settings_path.exists():
        # Plans are prefix-consistent in the number of clips (clip i is the same for any total), so a
        # corpus may grow: only the other settings must match.
        before = {k: v for k, v in json.loads(settings_path.read_text()).items() if k != "clips"}
        if before != {k: v for k, v in settings.to_json().items() if k != "clips"}:
            raise CorpusError(f"{out} holds a corpus made with other settings ({settings_path.name}); "
                              "use another folder, or the same settings (any --clips) to resume or grow it")
    settings_path.write_text(json.dumps(settings.to_json(), indent=1))
    todo = [j for j in jobs if not clip_is_written(out, j.clip_id)]
    log(f"corpus {out}: {len(jobs)} clips planned from {len(configs)} voice configurations; "
        f"{len(jobs) - len(todo)} already written, {len(todo)} to make with {workers} workers")
    bar = Progress(len(todo)) if progress and todo else None
    failures: list[str] = []
    made_seconds = 0.0
    start = time.monotonic()
    try:
        if todo:
            if workers <= 1:
                _init_worker(settings.head, settings.sentences)
                results = map(_run_job, ((j, out) for j in todo))
                pool = None
            else:
                pool = multiprocessing.get_context("spawn").Pool(workers, _init_worker, (settings.head, settings.sentences))
                results = pool.imap_unordered(_run_job, ((j, out) for j in todo), chunksize=1)
            try:
                for clip_id, seconds, error in results:
                    made_seconds += seconds
                    if error:
                        failures.append(error)
                    if bar:
                        bar.update(seconds, error is not None)
            finally:
                if pool is not None:
                    pool.terminate()
                    pool.join()
    finally:
        if bar:
            bar.close()
        wall = time.monotonic() - start
        metas = [read_meta(out, j.clip_id) for j in jobs if clip_is_written(out, j.clip_id)]
        header = {"head": {"name": head.name, "identity": head.identity, "spec": settings.head},
                  "expression_names": list(head.expression_names), "generator": settings.to_json(),
                  "voices": {c.id: {"split": splits[c.id], "group": c.group} for c in configs}}
        write_index(out, header, metas)
    for message in failures[:10]:
        log(f"thunder: skipped {message}")
    summary = {"planned": len(jobs), "made": len(todo) - len(failures), "already_written": len(jobs) - len(todo),
               "failed": len(failures), "speech_hours_made": made_seconds / 3600, "wall_hours": wall / 3600,
               "speech_hours_per_compute_hour": (made_seconds / wall) if wall > 0 and made_seconds else 0.0,
               "index_clips": len(metas)}
    log(f"made {summary['made']} clips ({made_seconds / 3600:.3f} h of speech) in {wall / 60:.1f} min: "
        f"{summary['speech_hours_per_compute_hour']:.2f} h of speech per hour of compute on {workers} workers; "
        f"{summary['failed']} failed; the index lists {len(metas)} clips")
    return summary
