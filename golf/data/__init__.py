"""Challenge data: shard format, the training token stream, and preparation (sources/).

The embedded default corpus's folder and tokenizer names live here, not in sources/embedded.py:
the main job checks for them in the packed script too, which ships no data source."""

EMBEDDED_DATASET = "embedded_sp1024"
EMBEDDED_TOKENIZER = "embedded_1024_bpe"
