"""Simulation campaigns: N beam particles cut into spill jobs, run on a dask cluster.

A campaign simulates ``n_beam`` beam particles (MOT / EOT) of one run as consecutive
simulated spills (:mod:`na64reco.sim.generate`: spill ``s`` draws from its own stream
``SeedSequence([seed, s])``), grouped into files of ``spills_per_file`` spills.  Each file
is one independent job, :func:`na64reco.sim.generate.simulate` with ``first_spill``, so
the files (their event content and spill table) depend only on (setup, run, seed,
options, ``n_beam``, spill size, ``spills_per_file``) and not on how many workers run the
jobs or in which order.  Event numbers start at 1 in every file; (run, spill, event) is
unique over the campaign.

The exposure is the sum of ``spills.n_beam`` over the files (:func:`campaign_exposure`);
it equals ``n_beam`` exactly.

    if __name__ == "__main__":  # needed in a script: the dask workers are new processes that import it
        plan = plan_campaign(n_beam=10**6, spill_particles=10_000, spills_per_file=10)
        result = simulate_campaign("na64mu", plan, seed=1, run=10001, outdir="camp", workers=2)
        # then: na64reco.runner.run_files({"beam": result.files}, RunOptions(...))
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from na64reco.config import integer_at_least
from na64reco.errors import ConfigError


@dataclass(frozen=True)
class SpillJob:
    """One file of a campaign: ``n_beam`` particles in spills ``first_spill, first_spill + 1, ...``."""

    index: int
    first_spill: int
    n_spills: int
    n_beam: int


@dataclass(frozen=True)
class CampaignPlan:
    n_beam: int
    spill_particles: int
    spills_per_file: int
    jobs: tuple[SpillJob, ...]


@dataclass
class CampaignResult:
    files: list[str]
    n_beam: int
    n_written: int
    n_spills: int
    seconds: float   # wall time of the whole campaign
    cpu_seconds: float  # sum of the simulation times of the jobs


def plan_campaign(n_beam: int, spill_particles: int, spills_per_file: int) -> CampaignPlan:
    """Cut ``n_beam`` particles into spills of ``spill_particles`` (the last one shorter)
    and the spills into files of ``spills_per_file`` (the last one shorter)."""
    n_beam = integer_at_least(n_beam, 1, "n_beam")
    spill_particles = integer_at_least(spill_particles, 1, "spill_particles")
    spills_per_file = integer_at_least(spills_per_file, 1, "spills_per_file")
    n_spills = -(-n_beam // spill_particles)
    jobs = []
    for index, first in enumerate(range(0, n_spills, spills_per_file)):
        k = min(spills_per_file, n_spills - first)
        n = min(k * spill_particles, n_beam - first * spill_particles)
        jobs.append(SpillJob(index, first, k, n))
    return CampaignPlan(n_beam, spill_particles, spills_per_file, tuple(jobs))


def default_spill_particles(setup: str, run: int) -> int:
    """Beam particles per simulated spill of ``setup`` for ``run`` (the simulator's default)."""
    from na64reco.geometry import load_setup
    from na64reco.sim.params import load_sim_params

    s = load_setup(setup, run=int(run))
    return int(max(1, min(s.beam.particles_per_spill, load_sim_params(s).spill_particles_max)))


def job_path(outdir: Path, stem: str, job: SpillJob) -> Path:
    return Path(outdir) / f"{stem}_{job.index:05d}.root"


def _run_job(setup: str, job: SpillJob, seed: int, run: int, path: str, options: dict, spill_particles: int):
    from na64reco.sim.generate import simulate

    r = simulate(setup, job.n_beam, seed, run, path, first_spill=job.first_spill,
                 spill_particles=spill_particles, **options)
    return r.n_beam, r.n_written, r.n_spills, r.seconds


def simulate_campaign(setup: str, plan: CampaignPlan, *, seed: int, run: int, outdir, stem: str | None = None,
                      workers: int = 1, client=None, overwrite: bool = False, **options) -> CampaignResult:
    """Run the jobs of ``plan`` on a dask cluster and return the files written.

    ``client``: an existing ``distributed.Client``; otherwise a
    :func:`na64reco.runner.local_cluster` of ``workers`` processes is started and closed.
    ``options`` go to :func:`~na64reco.sim.generate.simulate` (``process``, ``trigger``,
    ``truth``, ``mixture``, ...).  Files are ``outdir/<stem>_NNNNN.root`` (default stem
    ``<setup>_<process>_run<run>_seed<seed>``); existing ones are refused unless ``overwrite``
    (another campaign's files, and the results that name them, would silently change).
    """
    from contextlib import ExitStack

    from distributed import Client

    outdir = Path(outdir)
    if not outdir.is_dir():
        raise ConfigError(f"campaign output directory {outdir} does not exist")
    stem = stem or f"{setup}_{options.get('process', 'mixture')}_run{run}_seed{seed}"
    paths = [str(job_path(outdir, stem, j)) for j in plan.jobs]
    existing = [p for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise ConfigError(f"campaign: {len(existing)} of its {len(paths)} files exist ({existing[0]}, ...): another "
                          "campaign's? give another stem or outdir, or overwrite=True")
    t0 = time.perf_counter()
    with ExitStack() as stack:
        if client is None:
            from na64reco.runner import local_cluster

            cluster = stack.enter_context(local_cluster(integer_at_least(workers, 1, "workers")))
            client = stack.enter_context(Client(cluster))
        futures = client.map(_run_job, [setup] * len(paths), plan.jobs, [seed] * len(paths), [run] * len(paths),
                             paths, [options] * len(paths), [plan.spill_particles] * len(paths),
                             pure=False)
        done = client.gather(futures)
    return CampaignResult(paths, sum(d[0] for d in done), sum(d[1] for d in done), sum(d[2] for d in done),
                          time.perf_counter() - t0, sum(d[3] for d in done))


def campaign_exposure(files) -> tuple[int, int]:
    """(sum of ``spills.n_beam``, number of spills) over the spill tables of ``files``; two
    files holding the same events (the same file, a copy, the same seed's spills again:
    :mod:`na64reco.io.distinct`) are a ConfigError, as their beam would be counted twice."""
    import numpy as np

    from na64reco.io.distinct import DistinctFiles
    from na64reco.io.raw import open_raw

    total, n = 0, 0
    distinct = DistinctFiles("campaign exposure")
    for f in files:
        distinct.path(f)
        with open_raw(f) as raw:
            distinct.add(f, raw)
            spills = raw.spills()
        total += int(np.sum(np.asarray(spills["n_beam"], dtype=np.int64)))
        n += len(spills["n_beam"])
    return total, n
