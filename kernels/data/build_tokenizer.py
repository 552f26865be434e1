"""Train the shipped tokenizer: ``datasets/tokenizer-1024.json`` from the corpus.

The tokenizer is trained on the *train split* of the corpus pipeline (so the
eval split stays unseen), verified against the corpus digest in the manifest.
Deterministic: rerunning gives a byte-identical file.

Run: ``python -m kernels.data.build_tokenizer [--vocab-size 1024] [--out PATH]``;
then ``python -m kernels.data.build_manifest`` to record the new digest.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kernels.data.tokenizer import ByteBPE

DEFAULT_VOCAB = 1024


def train_shipped_tokenizer(vocab_size: int = DEFAULT_VOCAB, verify: bool = True) -> ByteBPE:
    from kernels.data.pipeline import ingest_corpus, run_pipeline

    result = run_pipeline(ingest_corpus(verify=verify), tokenizer=None)
    text = "".join(d.text for d in result.train)
    return ByteBPE.train(text, vocab_size)


def main(argv: list[str] | None = None) -> None:
    from kernels.data.manifest import datasets_root

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-verify", action="store_true", help="skip the corpus digest check")
    args = ap.parse_args(argv)
    out = args.out or datasets_root() / f"tokenizer-{args.vocab_size}.json"
    tok = train_shipped_tokenizer(args.vocab_size, verify=not args.no_verify)
    tok.save(out)
    print(f"wrote {out} (vocab {tok.vocab_size}, sha256 {tok.digest()})")


if __name__ == "__main__":
    main()
