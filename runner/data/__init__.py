"""The data engine: sources -> records -> filters -> dedup -> splits -> mixes.

    formats.py   raw rows (read by a source kind, runner.sources) -> records {id, messages, meta, source};
                 bad rows -> quarantine
    filters/     one module per row filter kind; FILTERS is the registry
    dedup.py     exact and MinHash dedup across sources, by priority
    splits.py    train/eval (random, stratified, temporal) and meta-learning tasks, never leaking
    mixing.py    a stage's mix: ratios as shares of the final rows
    stats.py     row accounting (in = out + dropped) and its terminal table
    text.py      which text a filter reads, word counts, normalisation
    io.py        deterministic JSON Lines
Heavy libraries (pyarrow, datasets, presidio, numpy, rensa) are imported inside the functions that
use them, so importing this package is cheap."""
