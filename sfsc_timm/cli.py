"""``sfsc-timm`` command line: ``train``, ``eval``, ``export``, ``push``, ``export-width``, ``embed``, ``index``,
``demo``."""
import importlib
import sys
from typing import List, Optional

# sub-command -> module with a ``main(argv)``; imported lazily so ``sfsc-timm --help`` stays fast
COMMANDS = {
    'train': ('sfsc_timm.train.cli', 'train the supernet (or a baseline) from a YAML recipe or a built-in one'),
    'eval': ('sfsc_timm.eval.cli', 'compatibility matrix of a checkpoint on a dataset'),
    'export': ('sfsc_timm.hub.export', 'write a Hub repository folder (weights, config, model card, heatmap)'),
    'push': ('sfsc_timm.hub.push', 'upload an exported folder to the Hugging Face Hub'),
    'export-width': ('sfsc_timm.hub.deploy', 'export one width for deployment (ONNX, TorchScript, torch.export, '
                                             'a timm / transformers folder)'),
    'embed': ('sfsc_timm.inference.cli', 'embed a folder of images or a dataset at one width into a Parquet file'),
    'index': ('sfsc_timm.index.cli', 'a faiss gallery index of embeddings: build, search from any width, add, remove, '
                                     'info'),
    'demo': ('sfsc_timm.demo', 'build sfsc_resnet50, extract every width, print size and CPU latency'),
}


def _usage() -> str:
    lines = [f'  {name:<13}{help_}' for name, (_, help_) in COMMANDS.items()]
    return ('usage: sfsc-timm [--version] COMMAND [ARGS]\n\ncommands:\n' + '\n'.join(lines)
            + '\n\nsfsc-timm COMMAND --help describes each command.\nerrors: one line on stderr, exit status 2 for bad '
              'input, 1 for a failure at run time; add --debug (or set SFSC_DEBUG=1) for the traceback')


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == '--version':
        from . import __version__
        print(f'sfsc-timm {__version__}')
        return 0
    if not argv or argv[0] in ('-h', '--help'):
        print(_usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f'sfsc-timm: error: unknown command {argv[0]!r}; commands: {", ".join(COMMANDS)} (sfsc-timm --help)',
              file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:]) or 0


if __name__ == '__main__':
    sys.exit(main())
