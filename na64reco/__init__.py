"""na64reco: raw data of the NA64 experiment to physics results.

Layers (each imports only from layers above it in this list):

    units, constants, errors, resources
    config            -- validated YAML loading (quantities with units)
    geometry          -- detector setups from ``calib/setups``
    conditions        -- per-channel calibration by run range from ``calib/``
    io                -- the raw ROOT format (read/write)
    sim               -- fast parametric simulator writing the raw format
    reco              -- raw digits -> calibrated physics quantities
    selection         -- cut-flows as data and blinding
    physics, stats    -- signal yields, backgrounds, limits
    cli               -- the ``na64reco`` command
"""

__version__ = "0.1.0"
