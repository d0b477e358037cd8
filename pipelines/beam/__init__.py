"""brainview on Apache Beam: classification past one machine, and Beam options.

    options.py      `--beam_pipeline_options` strings -> PipelineOptions (also
                    used by the dataset builders' Beam path, brainview_tfds/build.py)
    sources.py      scan folders and file patterns on any Beam filesystem -> scans
    inference.py    RunInference model handler: probabilities and Grad-CAMs
    sinks.py        rows -> CSV + CAM HDF5 shards, and the final join
    classify.py     the pipeline and its run (bin/classify_beam)

Nothing outside this package imports apache_beam at module level: importing
`brainview.classify` (classify_dir) or `brainview_tfds` never loads Beam.
"""
