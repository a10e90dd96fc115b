"""``sfsc-timm embed MODEL IMAGES --width W --output FILE.parquet``.

Errors are one line on stderr (``--debug`` for the traceback): exit status 2 for bad input (a model, images, width
or option that cannot be used), 1 for a failure while running (an unreadable image, a full disk), 130 on Ctrl-C.
"""
from pathlib import Path
from typing import List, Optional

from ..errors import CommandParser, UsageError, at_least, check_output_folder_writable, run_command
from .embed import embed_images


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog='sfsc-timm embed',
        description='Embed images at one width into a Parquet file: a path (or the dataset\'s id) column and a '
                    'unit-norm float32 embedding of dimension D, the same D at every width. Under torchrun each '
                    'process embeds its share and the shares are merged into one file.')
    parser.add_argument('model', help='hf-hub:ORG/NAME, local-dir:FOLDER, a checkpoint or run folder, or a model name')
    parser.add_argument('images', help='a folder of images (searched recursively, no labels needed), a dataset '
                                       'folder written by save_to_disk, or a Hub dataset id ORG/NAME')
    parser.add_argument('--width', type=float, default=None,
                        help='the sub-model\'s width (default: the full width of a supernet checkpoint, the only '
                             'width of a static one)')
    parser.add_argument('--output', type=Path, required=True, help='the Parquet file to write')
    parser.add_argument('--batch-size', type=int, default=64, help='images per forward pass (default: 64)')
    parser.add_argument('--workers', type=at_least(0, int), default=0,
                        help='processes that read and transform images (default: 0, the main process)')
    parser.add_argument('--device', default='auto', help='auto (CUDA when available), cpu or cuda (default: auto)')
    parser.add_argument('--split', default=None, help='dataset split (default: train, or the only split)')
    parser.add_argument('--image-column', default=None, help='dataset column of the images (default: found)')
    parser.add_argument('--id-column', default=None,
                        help='dataset column written as the id (default: id, else the image paths, else the row '
                             'number)')
    parser.add_argument('--no-progress', dest='progress', action='store_false', help='no progress bar')
    return parser


def _embed(argv: List[str]) -> None:
    args = build_parser().parse_args(argv)
    if args.output.suffix != '.parquet':
        raise UsageError(f'--output {args.output} must end in .parquet')
    # before any model is loaded: a folder that cannot hold the file (read-only, under a file) is named, not the
    # temporary file a late failure would name
    check_output_folder_writable(args.output.parent, '--output', file=args.output)
    result = embed_images(args.model, args.images, args.output, width=args.width, batch_size=args.batch_size,
                          workers=args.workers, device=args.device, split=args.split,
                          image_column=args.image_column, id_column=args.id_column, progress=args.progress)
    print(f'wrote {result.output}: {result.count} embeddings ({result.id_column}, embedding: {result.embed_dim} '
          f'float32, unit norm) at width {result.width:g}, {result.images_per_second:.1f} images/s')


def main(argv: Optional[List[str]] = None) -> int:
    return run_command('sfsc-timm embed', _embed, argv)
