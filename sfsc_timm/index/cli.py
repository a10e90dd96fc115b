"""``sfsc-timm index build | search | add | remove | info``: a gallery index over ``sfsc-timm embed``'s output.

Errors are one line on stderr (``--debug`` for the traceback): exit status 2 for bad input (a file, an index, a
parameter or queries of another checkpoint), 1 for a failure at run time, 130 on Ctrl-C, 143 on SIGTERM; an index
folder is always left whole (the previous one, or the new one).
"""
import json
import time
from pathlib import Path
from typing import List, Optional

from ..errors import CommandParser, UsageError, check_output_folder_writable, run_command
from ..eval.cli import add_reranking_arguments, reranking_options
from .gallery import DEFAULT_RERANK_CANDIDATES, GalleryIndex, build_index, summary_lines
from .kinds import KINDS, IndexSpec
from .results import check_results_destination, write_search_results

__all__ = ['build_parser', 'main']


def _add_build_arguments(parser: CommandParser) -> None:
    parser.add_argument('embeddings', type=Path, help='Parquet file of the gallery, written by sfsc-timm embed (any '
                                                      'width)')
    parser.add_argument('--output', type=Path, required=True, help='the index folder to write (whole or not at all)')
    parser.add_argument('--kind', choices=KINDS, default='flat',
                        help='flat: exact inner product (default); ivf-flat / ivf-pq: inverted lists of full / '
                             'product-quantised vectors; hnsw: a proximity graph')
    parser.add_argument('--nlist', type=int, help='ivf-*: k-means lists (default: a power of two near 4 sqrt(N))')
    parser.add_argument('--nprobe', type=int, help='ivf-*: lists scanned per query, recorded as the index\'s '
                                                   'default (default: nlist / 32)')
    parser.add_argument('--pq-m', type=int, help='ivf-pq: PQ codes per vector, a divisor of D (faiss\'s M; default: '
                                                 'the largest divisor of D up to D / 4)')
    parser.add_argument('--pq-nbits', type=int, help='ivf-pq: bits per PQ code (default: 8)')
    parser.add_argument('--hnsw-m', type=int, help='hnsw: links per node (faiss\'s M; default: 32)')
    parser.add_argument('--ef-construction', type=int, help='hnsw: beam width while building (default: 80)')
    parser.add_argument('--ef-search', type=int, help='hnsw: beam width while searching, recorded as the index\'s '
                                                      'default (default: 128)')
    parser.add_argument('--train-size', type=int,
                        help='ivf-*: gallery vectors the k-means and PQ are trained on, a uniform random sample '
                             '(default: all, up to 64 per centroid)')
    parser.add_argument('--seed', type=int, help='ivf-*: seed of the training sample (default: 0)')
    parser.add_argument('--force', action='store_true', help='replace --output even if it holds other files')


def _add_search_arguments(parser: CommandParser) -> None:
    parser.add_argument('index', type=Path, help='an index folder written by sfsc-timm index build')
    parser.add_argument('queries', type=Path, help='Parquet file of the queries, written by sfsc-timm embed at any '
                                                   'width of the index\'s checkpoint')
    parser.add_argument('--output', type=Path, required=True,
                        help='Parquet file of the hits: query id, rank, item_id, gallery id, score')
    parser.add_argument('--k', type=int, default=10, help='hits per query (default: 10)')
    parser.add_argument('--nprobe', type=int, help='ivf-*: lists scanned per query (default: the index\'s)')
    parser.add_argument('--ef-search', type=int, help='hnsw: beam width (default: the index\'s)')
    parser.add_argument('--rerank-candidates', type=int, default=None,
                        help=f'with --rerank: hits per query re-ranked among themselves (default: '
                             f'{DEFAULT_RERANK_CANDIDATES})')
    parser.add_argument('--allow-other-checkpoint', action='store_true',
                        help='search with embeddings of another checkpoint (or one not recorded) of the same size, '
                             'for models trained to be compatible with separate weights')
    add_reranking_arguments(parser)


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog='sfsc-timm index',
        description='A faiss index of gallery embeddings: built at one width, searched with queries of any width of '
                    'the same checkpoint; items added and removed under stable ids; re-ranking of the hits.')
    commands = parser.add_subparsers(dest='action', metavar='ACTION', required=True)
    _add_build_arguments(commands.add_parser('build', help='build an index folder from embed\'s Parquet file',
                                             description='Build an index folder from a Parquet file of embeddings.'))
    _add_search_arguments(commands.add_parser('search', help='top-k gallery items of each query, to Parquet',
                                              description='Search an index with embeddings of any width of its '
                                                          'checkpoint.'))
    add = commands.add_parser('add', help='append embeddings under new item ids',
                              description='Append embeddings (any width of the index\'s checkpoint) to an index.')
    add.add_argument('index', type=Path, help='the index folder')
    add.add_argument('embeddings', type=Path, help='Parquet file written by sfsc-timm embed')
    add.add_argument('--allow-other-checkpoint', action='store_true',
                     help='add embeddings of another checkpoint (or one not recorded) of the same size')
    remove = commands.add_parser('remove', help='remove items by id (path)',
                                 description='Remove items from an index; the others keep their item ids.')
    remove.add_argument('index', type=Path, help='the index folder')
    remove.add_argument('ids', nargs='*', help='gallery ids (the id column: paths, or dataset ids)')
    remove.add_argument('--ids-from', type=Path,
                        help='a text file of ids, one per line, or a Parquet file (e.g. embed\'s) whose id column '
                             'names them')
    remove.add_argument('--item-ids', action='store_true', help='the ids given are item ids (integers), not '
                                                                'gallery ids')
    info = commands.add_parser('info', help='what an index holds', description='Describe an index folder.')
    info.add_argument('index', type=Path, help='the index folder')
    info.add_argument('--json', action='store_true', help='print index.json (and the size on disk) as JSON')
    return parser


def _build(args) -> None:
    check_output_folder_writable(args.output)
    spec = IndexSpec(kind=args.kind, nlist=args.nlist, nprobe=args.nprobe, pq_m=args.pq_m, pq_nbits=args.pq_nbits,
                     hnsw_m=args.hnsw_m, ef_construction=args.ef_construction, ef_search=args.ef_search,
                     train_size=args.train_size, seed=args.seed)
    start = time.perf_counter()
    index = build_index(args.embeddings, args.output, spec, force=args.force)
    print(f'wrote {args.output}: {index.describe()}, in {time.perf_counter() - start:.1f} s')


def _search(args) -> None:
    if args.output.suffix != '.parquet':
        raise UsageError(f'--output {args.output} must end in .parquet')
    check_results_destination(args.output)
    check_output_folder_writable(args.output.parent)
    rerank, query_expansion = reranking_options(args)
    if args.rerank_candidates is not None and rerank is None:
        raise UsageError('--rerank-candidates is a parameter of --rerank; add --rerank (or drop --rerank-candidates).')
    index = GalleryIndex.open(args.index)
    result = index.search(args.queries, args.k, nprobe=args.nprobe, ef_search=args.ef_search, rerank=rerank,
                          rerank_candidates=args.rerank_candidates or DEFAULT_RERANK_CANDIDATES,
                          query_expansion=query_expansion, allow_other_checkpoint=args.allow_other_checkpoint)
    write_search_results(result, args.output)
    meta = result.metadata
    if meta['note']:
        print(f'note: {meta["note"]}')
    width = f' (width {meta["query_width"]:g})' if meta['query_width'] is not None else ''
    queries = len(result.query_ids)
    print(f'searched {queries:,} queries{width} in {args.index} ({index.describe()}): top {args.k} of each to '
          f'{args.output}; {queries / max(meta["seconds"], 1e-9):,.0f} queries/s')


def _read_ids(path: Path) -> List[str]:
    if not path.is_file():
        raise FileNotFoundError(f'--ids-from {path} does not exist; pass a text file of ids, one per line, or a '
                                'Parquet file.')
    if path.suffix == '.parquet':
        from .embeddings import read_embedding_file
        return read_embedding_file(path).ids.to_pylist()
    return [line.strip() for line in path.read_text(encoding='utf-8').splitlines() if line.strip()]


def _remove(args) -> None:
    ids = list(args.ids) + (_read_ids(args.ids_from) if args.ids_from else [])
    if not ids:
        raise UsageError('name the items to remove: ids on the command line or --ids-from FILE.')
    index = GalleryIndex.open(args.index)
    if args.item_ids:
        bad = [i for i in ids if not str(i).isdigit()]
        if bad:
            raise UsageError(f'--item-ids: item ids are integers >= 0, got {bad[0]!r}.')
        removed = index.remove(item_ids=[int(i) for i in ids])
    else:
        removed = index.remove(ids)
    print(f'removed {removed:,} items from {args.index}: {index.describe()}')


def _add(args) -> None:
    index = GalleryIndex.open(args.index)
    added = index.add(args.embeddings, allow_other_checkpoint=args.allow_other_checkpoint)
    first = f', item ids {int(added[0])}..{int(added[-1])}' if len(added) else ''
    print(f'added {len(added):,} items{first} to {args.index}: {index.describe()}')


def _info(args) -> None:
    index = GalleryIndex.open(args.index)
    if args.json:
        print(json.dumps(index.info(), indent=2))
        return
    print('\n'.join(summary_lines(index)))


def _index(argv: List[str]) -> None:
    args = build_parser().parse_args(argv)
    dict(build=_build, search=_search, add=_add, remove=_remove, info=_info)[args.action](args)


def main(argv: Optional[List[str]] = None) -> int:
    return run_command('sfsc-timm index', _index, argv)
