"""The gallery side of visual search: a faiss index built from embeddings of one width and searched with queries of
any other width of the same checkpoint, items added and removed under stable ids, k-reciprocal re-ranking and
average query expansion of the hits (docs/gallery_index.md). faiss is optional: ``pip install sfsc-timm[index]``.

    from sfsc_timm.index import GalleryIndex, IndexSpec, build_index
    index = build_index('gallery_w1.parquet', 'gallery_index', IndexSpec('hnsw'))
    hits = GalleryIndex.open('gallery_index').search('queries_w025.parquet', k=10)
"""
from ._faiss import INSTALL_HINT, MissingDependency
from .embeddings import EmbeddingFile, embeddings_from_array, read_embedding_file
from .folder import IndexFolderError
from .gallery import DEFAULT_RERANK_CANDIDATES, GalleryIndex, build_index
from .identity import IncompatibleEmbeddings, checkpoint_identity
from .kinds import KINDS, IndexSpec
from .results import SearchResult, write_search_results
