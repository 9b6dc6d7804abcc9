"""`vitkit shards DIR OUT`: write an image folder as WebDataset tar shards for streamed training."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shards", help="write an image folder as WebDataset tar shards",
                       description="Write DIR/<class>/<image> as OUT/PREFIX-000000.tar, ... (each image's "
                                   "bytes unchanged, its class index as .cls) and OUT/classes.json (class "
                                   "names, samples per class and per shard). Train on them with "
                                   "`vitkit train --data 'OUT/PREFIX-{000000..NNNNNN}.tar'`.")
    p.add_argument("dir", metavar="DIR", help="image folder with one subfolder per class")
    p.add_argument("out", metavar="OUT", help="folder to write the shards into")
    p.add_argument("--shard-size", type=int, required=True, metavar="N", help="samples per shard")
    p.add_argument("--shuffle", action="store_true",
                   help="write the samples in a seeded random order (default: sorted by class, which "
                        "the readers' shuffle buffer mixes only partly)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --shuffle order (default 0)")
    p.add_argument("--prefix", default="shards", help="shard file name prefix (default: shards)")
    p.add_argument("--overwrite", action="store_true", help="replace shards already in OUT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.shard_writer import write_shards

    written = write_shards(args.dir, args.out, args.shard_size, shuffle=args.shuffle, seed=args.seed,
                           prefix=args.prefix, overwrite=args.overwrite, progress=sys.stderr.isatty())
    print(f"wrote {written.num_samples} images of {len(written.classes)} classes into {len(written.shards)} "
          f"shards; index {written.index}")
    print(f"train with: vitkit train --data '{written.pattern}'")
    return 0
