"""`sg2ada dataset`: convert images (folder, zip, NVIDIA layouts, CIFAR, MNIST, builtin:NAME) into
an sg2ada dataset (sharded TFRecords + dataset.json). See sg2ada.data.tool for the format."""

from __future__ import annotations

import sys

HELP = "build a training dataset (sharded TFRecords + dataset.json) from images, NVIDIA datasets or builtin:shapes"


def add_arguments(parser) -> None:
    parser.add_argument("--source", required=True, metavar="SRC",
                        help="image folder (recursive) or zip (NVIDIA's dataset.json labels are used), NVIDIA TF1 "
                             "*.tfrecords folder, cifar-10-python.tar.gz, MNIST train-images-idx3-ubyte[.gz], "
                             "or builtin:shapes")
    parser.add_argument("--dest", required=True, metavar="DIR", help="output folder, or a bucket URL (s3://, gs://, az://, any fsspec URL); "
                             "must be new, empty, or --force")
    parser.add_argument("--transform", choices=["center-crop", "center-crop-wide"], default=None,
                        help="crop before resizing (default: none, images are scaled to --resolution)")
    parser.add_argument("--resolution", type=int, default=None, metavar="N",
                        help="output size NxN, a power of two (default: the images' own size)")
    parser.add_argument("--wide-height", type=int, default=None, metavar="H",
                        help="picture height inside the NxN canvas for center-crop-wide (default 3N/4)")
    parser.add_argument("--resize-filter", choices=["lanczos", "box"], default="lanczos", help="default: lanczos")
    parser.add_argument("--max-images", type=int, default=None, metavar="N",
                        help="stop after N images (for builtin: how many to generate, default 4096)")
    parser.add_argument("--channels", type=int, choices=[1, 3], default=None,
                        help="1 grayscale or 3 RGB (default: RGB unless every image is grayscale)")
    parser.add_argument("--labels-from", choices=["auto", "json", "folders", "none"], default="auto",
                        help="class labels: auto = dataset.json if present (CIFAR/MNIST/TF1 carry their own), "
                             "folders = one sub-folder per class, none = unlabelled")
    parser.add_argument("--encoding", choices=["png", "raw"], default="png",
                        help="image bytes in the records: png (small) or raw uint8 (fastest to read)")
    parser.add_argument("--shard-mb", type=float, default=256, metavar="MB", help="target shard size (default 256)")
    parser.add_argument("--workers", type=int, default=None, metavar="N", help="decode threads (default: CPU count, max 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed for builtin datasets (default 0)")
    parser.add_argument("--force", action="store_true", help="replace DEST if it already holds a dataset")


def main(args) -> int:
    from sg2ada.data.tool import convert_dataset

    meta = convert_dataset(
        args.source, args.dest, transform=args.transform, resolution=args.resolution, wide_height=args.wide_height,
        resize_filter=args.resize_filter, max_images=args.max_images, channels=args.channels,
        labels_from=args.labels_from, encoding=args.encoding, force=args.force, shard_mb=args.shard_mb,
        workers=args.workers, seed=args.seed, progress=True,
    )
    rep = meta["report"]
    labels = f", {meta['label_dim']} {meta['label_type']} labels" if meta["label_type"] else ", no labels"
    extra = ""
    if rep["rotated_count"]:
        extra += f", rotated {rep['rotated_count']} by EXIF orientation"
    if rep["symlink_loop_count"]:
        extra += f", {rep['symlink_loop_count']} symlink loop(s) not followed"
    if rep["labels_without_files_count"]:
        first = ", ".join(rep["labels_without_files"][:3])
        extra += f", {rep['labels_without_files_count']} label(s) for files not in the source (first: {first})"
    print(f"wrote {meta['count']} images {meta['resolution']}x{meta['resolution']}x{meta['channels']}{labels} "
          f"in {len(meta['shards'])} shard(s) to {args.dest} (skipped {rep['skipped_count']}, "
          f"converted {rep['converted_count']}{extra}; details in dataset.json)", file=sys.stdout)
    print(f"train on it with: sg2ada train --data {args.dest} --outdir runs", file=sys.stdout)
    return 0
