"""Reconstruction: raw digits -> calibrated physics quantities.

Submodules (import them directly; this package imports nothing on purpose):

``waveform``   MSADC digits -> per-digit amplitude, time, energy and quality flags
``calo``       per-event calorimeter, veto and counter quantities
``tracking``   tracker digits -> clusters -> tracks -> momenta
"""
