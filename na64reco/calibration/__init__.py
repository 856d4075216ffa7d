"""Calibration from data: per-channel MSADC constants derived from calibration runs.

``pedestals``  random-trigger runs -> pedestal_even, pedestal_odd, noise_adc
``mip``        muon runs -> gains (MeV per ADC count) from the MIP peak of each channel
``publish``    write the derived constants as a new conditions version and tag
``inputs``     checks of the input files (run range, beam particle, beam energy)

The ``na64reco calibrate`` command (:mod:`na64reco.commands.calibrate`) drives them.
"""
