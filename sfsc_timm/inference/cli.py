"""``sfsc-timm embed MODEL IMAGES --width W --output FILE.parquet``.

Errors are one line on stderr: exit status 2 for bad input (a model, images, width or option that cannot be used),
1 for a failure while running (an unreadable image, a full disk).
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional

from ..models import CheckpointError
from .embed import embed_images


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    parser.add_argument('--workers', type=int, default=0,
                        help='processes that read and transform images (default: 0, the main process)')
    parser.add_argument('--device', default='auto', help='auto (CUDA when available), cpu or cuda (default: auto)')
    parser.add_argument('--split', default=None, help='dataset split (default: train, or the only split)')
    parser.add_argument('--image-column', default=None, help='dataset column of the images (default: found)')
    parser.add_argument('--id-column', default=None,
                        help='dataset column written as the id (default: id, else the image paths, else the row '
                             'number)')
    parser.add_argument('--no-progress', dest='progress', action='store_false', help='no progress bar')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.output.suffix != '.parquet':
        print(f'sfsc-timm embed: --output {args.output} must end in .parquet', file=sys.stderr)
        return 2
    try:
        result = embed_images(args.model, args.images, args.output, width=args.width, batch_size=args.batch_size,
                              workers=args.workers, device=args.device, split=args.split,
                              image_column=args.image_column, id_column=args.id_column, progress=args.progress)
    except (ValueError, FileNotFoundError, CheckpointError) as e:  # the model, images or width cannot be used
        print(f'sfsc-timm embed: {e}', file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as e:  # while running: an unreadable image, a full disk
        print(f'sfsc-timm embed: {e}', file=sys.stderr)
        return 1
    print(f'wrote {result.output}: {result.count} embeddings ({result.id_column}, embedding: {result.embed_dim} '
          f'float32, unit norm) at width {result.width:g}, {result.images_per_second:.1f} images/s')
    return 0
