"""classify_dir: a scan folder -> a CSV of predictions and an HDF5 of Grad-CAMs.

One image's path through the modules, in order:

    scan_files.py    walk the folder (a lazy, deterministic stream of paths, this
                     shard's share) and read one file (never raises for bad files)
    scan_input.py    the tf.data graph: decode in parallel -> preprocessing.preprocess
                     -> equal-sized batches
    prediction.py    probabilities and Grad-CAMs per batch, the batch distributed
                     over the GPUs with the tf.distribute strategy
    output_writer.py the output files written: segment commits that survive a kill
                     or a full disk, and resume; built on
        outputs.py        file names, CSV columns and rows, checks, durable writes
        output_lock.py    one live run per set of outputs (flock)
        cam_file.py       the HDF5 CAM file: layout, parts, assembly, reading
        output_readers.py finished outputs read back: CSV rows, the run manifest
    decode_journal.py  which scans were being decoded when a run died (OOM kills)
    classify_dir.py  the run: model, settings, resume, progress, summary

and the tools that work on finished outputs, through output_readers.py and
cam_file.py:

    merge_shards.py  join the outputs of a --num_shards run
    sorting.py       file the scans into one folder per answer (--sort_into)
    scoring.py       accuracy on scans whose paths name their view (--score_by_name)
    overlays.py      draw CAMs over the scans (bin/render_cams)
    review_page.py   a static HTML page of a run (bin/render_cams --review)

Nothing here imports the dataset builders or TensorFlow Datasets.
"""
