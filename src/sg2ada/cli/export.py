"""`sg2ada export`: the generator as a self-contained TensorFlow SavedModel (and optionally TFLite).

The SavedModel runs with plain TensorFlow, without sg2ada: `m = tf.saved_model.load(DIR)`, then
`m.generate(z, c)["images"]` (psi from --trunc baked in, constant noise), `m.generate_psi(z, c,
psi)`, `m.mapping(z, c, psi)["ws"]`, `m.synthesize(ws)` and `m.synthesize_random(ws, noise_seed)`;
images NHWC float32 in [-1, 1]. See sg2ada.tools.export and DIR/assets.extra/sg2ada_export.json.
`--tflite` also writes DIR/generator.tflite (signatures generate and synthesize) when the converter
manages it; the result is reported either way.
"""

from __future__ import annotations

import os

HELP = "export the generator as a TensorFlow SavedModel (optionally TFLite) usable without sg2ada"


def add_arguments(parser) -> None:
    parser.add_argument("--network", required=True, metavar="NET", help="network snapshot directory or NVIDIA .pkl")
    parser.add_argument("--dest", required=True, metavar="DIR", help="SavedModel directory to write")
    parser.add_argument("--trunc", type=float, default=1.0, metavar="PSI",
                        help="truncation psi baked into the `generate` signature (default 1)")
    parser.add_argument("--tflite", action="store_true", help="also convert to DIR/generator.tflite")
    parser.add_argument("--force", action="store_true", help="replace DEST if it exists")


def main(args) -> int:
    from sg2ada.errors import UserError
    from sg2ada.tools.common import check_network_path, check_psi

    psi = check_psi(args.trunc)
    check_network_path(args.network)
    dest = os.path.abspath(args.dest)
    if os.path.lexists(dest) and not args.force:
        raise UserError(f"{dest}: already exists; choose another --dest or pass --force to replace it")
    if os.path.abspath(args.network) == dest:
        raise UserError(f"{dest}: --network and --dest are the same path")

    from sg2ada.tools.common import load_generator
    from sg2ada.tools.export import export_saved_model, export_tflite

    G = load_generator(args.network)
    export_saved_model(G, dest, truncation_psi=psi, overwrite=args.force, source=os.path.abspath(args.network))
    print(f"wrote SavedModel {dest} (signatures generate, generate_psi, mapping, synthesize, synthesize_random; "
          f"generate uses psi {psi:g})")
    if args.tflite:
        report = export_tflite(dest, os.path.join(dest, "generator.tflite"))
        if report["ok"]:
            how = (f"with Select TF ops {', '.join(report['flex_ops']) or '?'}: runs only with an interpreter that "
                   "links the Flex delegate" if report["select_tf_ops"] else "builtin ops only")
            print(f"wrote {report['path']} ({how})")
        else:
            raise UserError(f"TFLite conversion failed ({report['error']}); the SavedModel at {dest} is fine")
    return 0
