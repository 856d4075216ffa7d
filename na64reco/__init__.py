"""na64reco: raw data of the NA64 experiment to physics results.

Layers (each imports only from layers above it in this list):

    units, constants, errors, resources, material
    config            -- validated YAML loading (quantities with units)
    physics, stats    -- cross sections, widths, g-2, yields, limits (pure functions)
    geometry          -- detector setups from ``calib/setups``
    conditions        -- per-channel calibration by run range from ``calib/``
    io                -- the raw ROOT format (read/write)
    sim               -- fast parametric simulator writing the raw format
    reco, calibration -- raw digits -> calibrated physics quantities; constants from data
    display           -- event display
    selection         -- cut-flows as data and blinding
    runner            -- coffea Runner over files (processors/ hold the analysis glue)
    background, efficiency, unblinding
    cli, commands     -- the ``na64reco`` command
"""

__version__ = "0.1.0"
