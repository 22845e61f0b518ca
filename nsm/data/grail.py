"""GraIL's 12 inductive link-prediction splits as datasets: files, protocol and enclosing subgraphs.

The splits of Teru, Denis and Hamilton, "Inductive Relation Prediction by Subgraph Reasoning"
(ICML 2020): ``WN18RR_v1..v4``, ``fb237_v1..v4``, ``nell_v1..v4`` (``SPLITS``; names are
case-insensitive, ``canonical_split`` spells them; the group name ``grail`` stands for all 12).

Files. Each split is six files, ``<split>/{train,valid,test}.txt`` and
``<split>_ind/{train,valid,test}.txt`` (``head<TAB>relation<TAB>tail`` per line). They are obtained
the way PyG datasets are: when ``$NSM_GRAIL_DIR`` names a local copy laid out like GraIL's ``data/``
folder it is read in place; otherwise they are downloaded once with
``torch_geometric.data.download_url`` from the raw files of ``kkteru/grail`` at a fixed commit into
``<root>/grail/raw/<folder>/<file>``. Either way every file is checked against the sha256 kept in
this module. A download goes to a temporary folder and only verified files are moved into place,
so a failure leaves nothing behind.

The task (``grail_protocol``), as GraIL defines it, deterministic in ``seed``:

- Relations: the sorted relation names of ``<split>/train.txt``. A triple of any other file whose
  relation is not among them is dropped and counted in ``GrailProtocol.dropped`` (GraIL drops them
  too; none of the 12 published splits has one).
- Training: the graph is ``<split>/train.txt``; its triples are the positive targets, each with one
  corruption (head or tail, with probability 1/2, replaced by a uniformly drawn entity of the
  training graph so that the result is not a triple of the training graph and not a self-loop), or
  with ``train_corruptions`` of them, drawn independently (the first is the same either way). The
  trainer pairs every fact with one of them per epoch, in turn.
- Validation: ``<split>/valid.txt`` scored against the training graph. Test: ``<split>_ind/test.txt``
  scored against the graph of ``<split>_ind/train.txt``, whose entities are new (inductive).
  Entities: those of ``<split>/{train,valid}.txt`` on the training side, of the three
  ``<split>_ind`` files on the test side, numbered by first appearance. A triple whose head is its
  tail has no enclosing subgraph and is no target (none of the 12 splits has one).
- AUC-PR pairs: every validation (test) triple and one corruption of it.
- Ranking lists: every test triple among ``num_candidates`` (50) candidates, once with the head and
  once with the tail replaced: the true triple first, then ``num_candidates - 1`` distinct
  corruptions (uniformly drawn entities) that are not true triples and not self-loops. "True" is
  filtered: for validation any triple of ``<split>/{train,valid}.txt``; for the test any triple of
  ``<split>_ind/{train,valid,test}.txt``. Where fewer corruptions exist, the list holds all of them
  and is filled up by drawing again among them, as GraIL's sampler (which always draws with
  replacement) does; ``GrailProtocol.padded_lists`` counts such lists. Only nell_v1 has any: its
  test graph has 225 entities and hubs that are the tail of about 200 triples of one relation, so
  62 of its 100 head-replaced and 19 of its 100 tail-replaced test lists repeat corruptions.
  Validation ranks a fixed seeded subset of ``val_queries`` (100) validation triples: 100 queries
  give 200 rankings, 100 x 2 x 50 = 10,000 subgraphs per evaluation, about the forward cost of one
  WN18RR_v1 training epoch (10,820 subgraphs) rather than six times it for all 630; every trial is
  scored on the same subset, so comparisons between configurations stay paired.
  ``val_queries=None`` ranks them all.

Subgraphs (``load_grail``). Every target above (training pairs, AUC pairs, every ranking
candidate) becomes its enclosing subgraph: GraIL's double-radius labelled ``hops``-hop enclosing
subgraph with the target fact removed, at most ``max_nodes`` nodes, closest to both roots first
(see ``nsm.data._subgraph`` for the exact rule and its one deviation from GraIL's code); with
``train_graph_keep`` below 1 the training targets' subgraphs and root inputs come from a seeded random
part of the training graph instead (``thinned_training_graph``). Node
features are the one-hot distance labels only (``node_feature_names(hops)``); edge types are relation ids.
Per graph the store keeps ``head_index`` and ``tail_index`` (local node indices of the roots),
``relation`` (the query relation id) and ``root_relations`` (``root_relation_counts``: how many facts
of each relation leave and enter each root, leaving out the training fact a target was made from);
``y`` is 1 for a true triple, 0 for a corruption. The result
is cached in ``<root>/grail/processed/`` (keyed by split, seed, hops, max_nodes, candidates,
validation queries, training corruptions, the kept fraction of the training graph and a format version; atomic writes; ``torch.load(weights_only=True)``).

Default ``max_nodes`` is 200 (measured with the defaults): the WN18RR subgraphs stay whole but for
a few (v1 and v4: none of 41,256 and 173,506; v2: 4 of 89,182; v3: 591 of 129,706, the largest
502 nodes), while FB15k-237 and NELL-995 have hubs that put thousands of entities within 3 hops
of both roots (fb237_v4: median subgraph about 2,500 nodes; 140,331 of 216,358 capped; nell_v1:
8,249 of 30,402), so there a subgraph keeps its 200 nodes closest to both roots.
"""

from __future__ import annotations

import contextlib
import hashlib
import numbers
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import download_url

from nsm._threads import one_thread
from nsm.config import MAX_TRAIN_CORRUPTIONS
from nsm.data import _cache
from nsm.data._subgraph import extract
from nsm.data.packed import PackedGraphs
from nsm.domains import GRAIL_SPLITS
from nsm.errors import ConfigError

GROUP = "grail"
SPLITS: tuple[str, ...] = GRAIL_SPLITS  # named in nsm.domains, which config validation reads without torch
FILES: tuple[str, ...] = ("train.txt", "valid.txt", "test.txt")
COMMIT = "2a3dffa719518e7e6250e355a2fb37cd932de91e"
URL = "https://raw.githubusercontent.com/kkteru/grail/{commit}/data/{path}"
ENV_DIR = "NSM_GRAIL_DIR"

DEFAULT_HOPS = 3  # GraIL's default
DEFAULT_MAX_NODES = 200
DEFAULT_NUM_CANDIDATES = 50  # GraIL's ranking protocol
DEFAULT_VAL_QUERIES = 100

_FORMAT = 5  # bump when the processed payload or anything that decides its content changes
_DOWNLOAD_TIMEOUT_S = 60.0

# sha256 of every file, "<folder>/<file>" -> hex digest (kkteru/grail at COMMIT).
_SHA256: dict[str, str] = {
    "WN18RR_v1/test.txt": "f1cb44e999e2540a0a614f4bb710c7f82a9304432ff37ce282749b56c66d0d20",
    "WN18RR_v1/train.txt": "4cc72d4fdcc8206e208e1f59f3c778be5de4a68cfe76776d15245b0d2c08d396",
    "WN18RR_v1/valid.txt": "5cebd29da8ada35ac73b6875329884cdf83943ddea454e9f70cc43b423ea479b",
    "WN18RR_v1_ind/test.txt": "6df8c00a2e0cf1a4b484ac638c081198926fcbc411ce2e12ccc79d432eead269",
    "WN18RR_v1_ind/train.txt": "7d1b73c5994e9aa816b34e33ee10707656803ba6b8a0f6066cae7ddc04f87553",
    "WN18RR_v1_ind/valid.txt": "cfa28b9d75dbab17ea82a9443a5bf8acb738e60267cc63f8a221b38967e1d238",
    "WN18RR_v2/test.txt": "04e03f270adf4970132ad51ab1a4022e46e790e9b662890ce4e13d31e6d096ad",
    "WN18RR_v2/train.txt": "a14a902df92e32f4aeb65761560072a007ae915308bb8a7a03c58dc1e9c2a9ad",
    "WN18RR_v2/valid.txt": "2d3f6703d87fe1605f636736f0e848d9750b8e1593bd41101554ecbb41a1d836",
    "WN18RR_v2_ind/test.txt": "3b3942ce7665f1a6667721f5eab946bde79a5929f1996c5af16e0b092a5084bb",
    "WN18RR_v2_ind/train.txt": "8dc9bb459e6306737a083b15698ed1420ce8dc57e27f8a42ab7b90c26dfc5154",
    "WN18RR_v2_ind/valid.txt": "fc32db7cb56dba0ff05bf57efd8a2279f0825dc6ae763c9d32281a9a1373c09a",
    "WN18RR_v3/test.txt": "df6690cc2a454c14f79a62e879ba6d688bd666f2cf6168e1d6abffd7a7efc598",
    "WN18RR_v3/train.txt": "324a2b04b621bfe8d2dd98ad1c585fbc7efefb1548e92b5d10afc08733286aa7",
    "WN18RR_v3/valid.txt": "7f008df4879d36ef70a5c5eb58a7c87488c3f1fea606ab484e66a1aff89b0cbc",
    "WN18RR_v3_ind/test.txt": "efad21a11c1cf26a1a4a5fcf7a64c585ccde3c4f8f71de3a00a995d9e8c9938d",
    "WN18RR_v3_ind/train.txt": "85b817c364d097793a4b0969fa49d20167345256bf812c978bff381ad3aef492",
    "WN18RR_v3_ind/valid.txt": "c0876dafce4cef4c6ef1aa53457fb9f4e40a31a8bf9edbaf05389bfe5ba26f43",
    "WN18RR_v4/test.txt": "7d4f3226400ea477a5559aa69034df73f0cd314c1a1916963ac000b2cac44e82",
    "WN18RR_v4/train.txt": "5eace2cdfdffb2b19c6d27c7527ae79b8f4b1b3fb712d9a5049243a13edb95ca",
    "WN18RR_v4/valid.txt": "ca1568ca934bbf5ccfeabb3a67010968433c0e5bc1df9b0d3d48279023abd7bd",
    "WN18RR_v4_ind/test.txt": "10ccff353175e6eaaff0b3d7ef7931115845868653ddba0ba6fb5c8dfdab6364",
    "WN18RR_v4_ind/train.txt": "d5608132dab5873666e249c1de9412608c0e0b2cc0d154b0ffceff1ce067cc03",
    "WN18RR_v4_ind/valid.txt": "0928c5cb528ebde49a3be13f3df4d863f95312c247854bea556c65008cc5b54c",
    "fb237_v1/test.txt": "130534f98bc3b9621bc866035098b132091e8bc749fbad327b5978f3d47f49f7",
    "fb237_v1/train.txt": "74ef3120fe38a22e5131064d23108b88a8d339496057fa8467d80dcda8f1cec1",
    "fb237_v1/valid.txt": "d4c2698d7dc36c0dc39ffb3d810caeafe530d779bf9f6451fac2027f41c2ff6d",
    "fb237_v1_ind/test.txt": "c79d39372be30a3864cfe5094b3022f38b57d88c351dbbfa2d9e7f3368ac23aa",
    "fb237_v1_ind/train.txt": "049829f7047ecf0e0bff0769efca31bc7f811f760c4ffcb20a5680f789b00c61",
    "fb237_v1_ind/valid.txt": "ac817123c4177ef46b08a3802380a355282b99d4283c43474c9dd91c082107dd",
    "fb237_v2/test.txt": "95da050e60b94f285cdf18ea7899b34df9e0a4a1d638f5ec6ff99caef36a2beb",
    "fb237_v2/train.txt": "542f81af46d6727979278643105ba7c236dd8b29ee5d9962e3c3fa295ab8869c",
    "fb237_v2/valid.txt": "59e07dcb883b28bb35585ba95576e4ebb2a71ddbc906119abcc4c87b28198d0c",
    "fb237_v2_ind/test.txt": "17c16e008cb6dfdc67ef0f375aab0a8fee2b087c7d687a72f5217b789d0c4a10",
    "fb237_v2_ind/train.txt": "6756f8d4aa688bc1a18c1106117a7fde94e0469f223f5d00954846afce471e54",
    "fb237_v2_ind/valid.txt": "2c3b4430cac899b868c9dd22ece0eae830ca62c8a6c0bf8610c670bbeaf7d6d8",
    "fb237_v3/test.txt": "f93ff5277296486e2ce5d035e46b81b24b89e55a7a8e41196636482aeb50a49b",
    "fb237_v3/train.txt": "0f27b7f00d3e34964450c22445d17f7612d12d7c382caa3317f45bfe7465f299",
    "fb237_v3/valid.txt": "8b034e73fe64af9c7baf1e12704a94e7e9a9e6b9242feb498c69ebd65bccf269",
    "fb237_v3_ind/test.txt": "7dbd4d74210ffd5029d95327639f83c3b46f8bd4ee3571e619812b367d0880da",
    "fb237_v3_ind/train.txt": "2805f9237816f5bb5bb1ff1fbc3d37cc0beb99047bef3a6bd82cc1f6947e8525",
    "fb237_v3_ind/valid.txt": "76f7691aa597d43d704af047d01a5f4d266c02733c52a5c340c2bea4a85dd281",
    "fb237_v4/test.txt": "f1ecc866636b2704bd6f7cae53d2bbeea414fa88c1f2b4ab9f1924719bd505c8",
    "fb237_v4/train.txt": "b9fa0f2650a1ab7687e21e0aec24bb51c0b0eacf0d88c8780c03c9b201b9148d",
    "fb237_v4/valid.txt": "d99dedcd13bc0cd338a299a895685b66f15e0b7ed42477d40f1ad1a65ce6d483",
    "fb237_v4_ind/test.txt": "8e6e19adb9b154348897bf896b5305a76126bc4d79a21705ea47e4efce2d84f3",
    "fb237_v4_ind/train.txt": "ef55c03e05d5eeeec97fe2030e92bc36bd5ee9311b770ae0a3fd812982686e8d",
    "fb237_v4_ind/valid.txt": "0a237c20719267449388e1d43995ccf67da5a3c82085ba5d2e3996c77dc73921",
    "nell_v1/test.txt": "45ec92b2c2b6cfdd1fe29001dcb1fa5b8fc3c5c4cf0778e67ddad9f6fcce5f53",
    "nell_v1/train.txt": "d2b5d535ace4d1e3a18e69176e84a3ada1ca62fb4a647a12c4222781b91615ba",
    "nell_v1/valid.txt": "d11d6de249ff1185e701536a7d63f0c997cf7cce2646f3d17c06ecc885835726",
    "nell_v1_ind/test.txt": "66a497671114e73f450cf9e5eb79be5e5790121816228eb43e3ba3481e2bfa28",
    "nell_v1_ind/train.txt": "b0bfb66f65d70586a26703eb022926a75c1f234d1bcdeafe2e8d387be41291ee",
    "nell_v1_ind/valid.txt": "297c1c82c944bd76255f6ad4cc22f5ecbb23c9daac366e8991b5770ca0dfb8fc",
    "nell_v2/test.txt": "0fb5ac8305b8aab8b0df9b3b0bbd6962520011beae66b9f51470ab5d7d7b473c",
    "nell_v2/train.txt": "850a117e29126fd2e8d9d4ddb3430ee540c7ed2999142fb0fd9d7195204ce0a1",
    "nell_v2/valid.txt": "deb8b4c65548da49f3d8a1a171dbfa106de8b38d6747d38486ced4d324d3a600",
    "nell_v2_ind/test.txt": "b479de23638f3d86d96094b0e3a18144433841f84e1cec7af192b44839c8e1cf",
    "nell_v2_ind/train.txt": "d92470e3e07f354e665ee9cc5c4e0fb99ff8e6414839f340607be32e7709aef4",
    "nell_v2_ind/valid.txt": "efcd59a03cb9a345f35ce7139c4817bc632143325394b474278b75568fe0808f",
    "nell_v3/test.txt": "a4a8bdc40b4f94429446fbfd17474cee2656146dc7942a55b046afe0f846a786",
    "nell_v3/train.txt": "88507ad17277d91d1a6d55d5b6ad4661a4b00bb7087923794a8cac820944dd73",
    "nell_v3/valid.txt": "23313dcf7951a8cfc12b7d0c4bc84e5119024b1342d5ca5c042f38bab6cf9d71",
    "nell_v3_ind/test.txt": "f24cd61c799edced7dac727a132bb57a8791092c4705f7f7bf5474f4160da67d",
    "nell_v3_ind/train.txt": "08f161d7a842bdfef4394222b00996fc657cf9d8c8fabf73cfaf42c41a44b20c",
    "nell_v3_ind/valid.txt": "0be937cd2ed452b950b4eadd7f306960004a334fdd478f4f68172fec86596daa",
    "nell_v4/test.txt": "b0bc008c8e42e6c0e043c71c831e235dac514385dcef12a7ef47a42b1954b0d6",
    "nell_v4/train.txt": "00302276571b80a910582d00a20041d4ac8026ca4bbe457de8143e8ecb339d23",
    "nell_v4/valid.txt": "f5dfc264c150172225a519f67a3a2821635ef7d19d4ab45a179572ac8749fa6a",
    "nell_v4_ind/test.txt": "040f15a24c22897b6a583e007044e1910523214a463491618d8aa635bf89dbdc",
    "nell_v4_ind/train.txt": "30ccc157815e5176bb2fda0f625dd1d71ed5b2fdc3c30484d0b9593e18be2c66",
    "nell_v4_ind/valid.txt": "3f1e61b8e446c684787bed333578c9c9af8d917e1e2277ae051d19d5710b727f",
}


# Published test numbers on these splits (fractions, 50 candidates), as collected in the project's
# shared copy of the data (../shared/data/grail/README.md): GraIL's Hits@10 and AUC-PR (Teru et al.
# 2020), NBFNet's Hits@10 (its README; none published for NELL-995).
_GRAIL_HITS = (0.8245, 0.7868, 0.5843, 0.7341, 0.6415, 0.8180, 0.8283, 0.8929, 0.5950, 0.9325, 0.9141, 0.7319)
_GRAIL_AUC_PR = (0.9432, 0.9418, 0.8580, 0.9272, 0.8469, 0.9057, 0.9168, 0.9446, 0.8605, 0.9262, 0.9334, 0.8750)
_NBFNET_HITS = (0.948, 0.905, 0.893, 0.890, 0.834, 0.949, 0.951, 0.960, None, None, None, None)
PUBLISHED: dict[str, dict[str, float]] = {
    split: {
        "grail_hits_at_10": hits,
        "grail_auc_pr": auc,
        **({"nbfnet_hits_at_10": nbf} if nbf is not None else {}),
    }
    for split, hits, auc, nbf in zip(SPLITS, _GRAIL_HITS, _GRAIL_AUC_PR, _NBFNET_HITS)
}


def node_feature_names(hops: int = DEFAULT_HOPS) -> tuple[str, ...]:
    """Names of the node feature columns: one-hot distance to the head, then to the tail."""
    return (*(f"dist_head_{d}" for d in range(hops + 1)), *(f"dist_tail_{d}" for d in range(hops + 1)))


# --------------------------------------------------------------------------------------------- names


def _known_splits() -> tuple[str, ...]:
    folders = {key.split("/", 1)[0] for key in _SHA256}
    return tuple(f for f in sorted(folders, key=str.lower) if not f.endswith("_ind") and f"{f}_ind" in folders)


def canonical_split(name: str) -> str:
    """The split's canonical spelling (names are case-insensitive); ``ConfigError`` if unknown."""
    known = _known_splits()
    by_lower = {s.lower(): s for s in known}
    if isinstance(name, str) and name.lower() in by_lower:
        return by_lower[name.lower()]
    ordered = [s for s in SPLITS if s in known] + [s for s in known if s not in SPLITS]
    raise ConfigError(f"unknown GraIL split {name!r}; expected one of {', '.join(ordered)} (or {GROUP!r} for all)")


def is_split(name: str) -> bool:
    """Whether ``name`` is a GraIL split (any case)."""
    return isinstance(name, str) and name.lower() in {s.lower() for s in _known_splits()}


def resolve(name: str) -> tuple[str, ...]:
    """The splits a name stands for: all 12 for the group name ``grail``, else the one split."""
    if isinstance(name, str) and name.lower() == GROUP:
        return SPLITS
    return (canonical_split(name),)


# --------------------------------------------------------------------------------------------- files


def raw_files(name: str, root: str | Path | None = None) -> dict[str, Path]:
    """The split's six verified files, ``"<folder>/<file>" -> path``, downloading them if needed.

    With ``$NSM_GRAIL_DIR`` set, the files are read from there and never copied. Otherwise they live
    in ``<root>/grail/raw/``; missing or corrupt ones are downloaded (all into a temporary folder
    first; only when every one is verified are they moved into place).
    """
    split = canonical_split(name)
    rels = [f"{folder}/{file}" for folder in (split, f"{split}_ind") for file in FILES]
    local = os.environ.get(ENV_DIR)
    if local:
        base = Path(local).expanduser()
        if not base.is_dir():
            raise ConfigError(f"${ENV_DIR}={local!r} is not a directory")
        paths = {rel: base / rel for rel in rels}
        for rel, path in paths.items():
            if not path.is_file():
                raise ConfigError(f"GraIL split {split}: file {rel} is missing from ${ENV_DIR} ({path})")
            _verify(path, rel, f"${ENV_DIR} copy {path}")
        return paths
    raw = _data_root(root) / "grail" / "raw"
    paths = {rel: raw / rel for rel in rels}
    stale = [rel for rel, path in paths.items() if not (path.is_file() and _sha256(path) == _SHA256[rel])]
    if stale:
        _download(stale, raw)
    return paths


def _data_root(root: str | Path | None) -> Path:
    folder = Path(root).expanduser() if root is not None else _cache.default_root()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"data root {str(folder)!r} is not a directory")
    return folder


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, rel: str, what: str) -> None:
    actual = _sha256(path)
    if actual != _SHA256[rel]:
        raise ConfigError(f"{what} fails its sha256 check (expected {_SHA256[rel][:12]}..., got {actual[:12]}...)")


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """PyG's download_url opens the URL without a timeout; bound it so a dead network fails, not hangs."""
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _download(rels: list[str], raw: Path) -> None:
    created = _missing_parents(raw)
    try:
        raw.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=raw))
    except OSError as exc:
        _remove_empty(created)
        raise ConfigError(f"cannot write GraIL's files under {raw}: {exc.strerror or exc}") from None
    try:
        for rel in rels:
            url = URL.format(commit=COMMIT, path=rel)
            folder, file = rel.split("/", 1)
            try:
                with _socket_timeout(_DOWNLOAD_TIMEOUT_S):
                    got = Path(download_url(url, str(staging / folder), log=True, filename=file))
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = (str(getattr(exc, "reason", "") or exc) or type(exc).__name__).splitlines()[0]
                raise ConfigError(
                    f"could not download {url} ({reason}); set ${ENV_DIR} to a local copy of GraIL's data/ folder"
                ) from None
            _verify(got, rel, f"downloaded {url}")
        for rel in rels:
            (raw / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, raw / rel)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise
    shutil.rmtree(staging, ignore_errors=True)


def _remove_empty(folders: list[Path]) -> None:
    """Removes the folders a failed download created (deepest first), where still empty."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _missing_parents(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    return missing


def _read_triples(path: Path) -> list[tuple[str, str, str]]:
    triples = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for lineno, line in enumerate(lines, 1):
        fields = line.split()  # GraIL's own parsing: any whitespace
        if not fields:
            continue
        if len(fields) != 3:
            raise ConfigError(f"{path}:{lineno}: expected 'head<TAB>relation<TAB>tail', got {len(fields)} fields")
        triples.append((fields[0], fields[1], fields[2]))
    return triples


# --------------------------------------------------------------------------------------------- protocol


@dataclass(frozen=True)
class GrailProtocol:
    """What is scored, as entity/relation ids: every tensor of triples holds rows ``(head, relation, tail)``.

    Training and validation triples index ``train_entities``; test triples index ``test_entities``.
    AUC tensors hold ``2 * P`` triples: the ``P`` true ones, then the corruption of each in the same
    order. ``train_targets`` holds ``(1 + train_corruptions) * E`` triples: the ``E`` facts, then
    ``train_corruptions`` blocks of one corruption of each fact, in the same order. Ranking tensors
    are ``[2, Q, num_candidates, 3]``: ``[0]`` the head replaced, ``[1]`` the tail replaced;
    ``[:, q, 0]`` is the true triple of query ``q``.
    """

    name: str
    seed: int
    num_candidates: int
    relation_names: tuple[str, ...]
    train_entities: tuple[str, ...]
    test_entities: tuple[str, ...]
    train_graph: Tensor  # [E, 3] facts of <split>/train.txt
    test_graph: Tensor  # [E', 3] facts of <split>_ind/train.txt
    train_targets: Tensor  # [(1 + K) * E, 3]: every training fact, then K blocks of one corruption of each
    valid_auc: Tensor  # [2 * V, 3]
    valid_ranking: Tensor  # [2, Qv, C, 3], Qv = min(val_queries, V)
    test_auc: Tensor  # [2 * T, 3]
    test_ranking: Tensor  # [2, T, C, 3]
    dropped: dict[str, int] = field(default_factory=dict)  # "<folder>/<file>" -> triples with unseen relations
    # "<valid|test>_<head|tail>" -> lists that repeat corruptions because fewer than C - 1 exist
    padded_lists: dict[str, int] = field(default_factory=dict)
    train_corruptions: int = 1  # K: corruptions drawn per training fact

    @property
    def num_relations(self) -> int:
        return len(self.relation_names)

    def train_labels(self) -> Tensor:
        """``[(1 + K) * E]`` labels of ``train_targets``: 1 for the facts, 0 for every corruption block."""
        facts = self.train_targets.shape[0] // (1 + self.train_corruptions)
        return torch.cat([torch.ones(facts, dtype=torch.long),
                          torch.zeros(self.train_corruptions * facts, dtype=torch.long)])

    @staticmethod
    def auc_labels(triples: Tensor) -> Tensor:
        """``[2 * P]`` labels of an AUC tensor: 1 for the first half, 0 for the corruptions."""
        half = triples.shape[0] // 2
        return torch.cat([torch.ones(half, dtype=torch.long), torch.zeros(half, dtype=torch.long)])


def grail_protocol(
    name: str,
    root: str | Path | None = None,
    *,
    seed: int = 0,
    num_candidates: int = DEFAULT_NUM_CANDIDATES,
    val_queries: int | None = DEFAULT_VAL_QUERIES,
    train_corruptions: int = 1,
) -> GrailProtocol:
    """The split's graphs, targets, corruptions and candidate lists (cheap; no subgraphs)."""
    split = canonical_split(name)
    seed, num_candidates, val_queries, train_corruptions = _check_protocol_args(
        seed, num_candidates, val_queries, train_corruptions)
    return _build_protocol(split, raw_files(split, root), seed, num_candidates, val_queries, train_corruptions)


def _check_int(value: Any, what: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{what} must be an integer {bound}, got {value!r}")
    return int(value)


def _check_fraction(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= 1:
        raise ConfigError(f"{what} must be a number in (0, 1], got {value!r}")
    return float(value)


def _check_protocol_args(
    seed: Any, num_candidates: Any, val_queries: Any, train_corruptions: Any
) -> tuple[int, int, int | None, int]:
    seed = _check_int(seed, "seed", 0)
    num_candidates = _check_int(num_candidates, "num_candidates", 2)
    if val_queries is not None:
        val_queries = _check_int(val_queries, "val_queries", 1)
    train_corruptions = _check_int(train_corruptions, "train_corruptions", 1, MAX_TRAIN_CORRUPTIONS)
    return int(seed), num_candidates, val_queries, train_corruptions


class _Vocab:
    """Entity ids in order of first appearance."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def add(self, triples: list[tuple[str, str, str]]) -> None:
        for h, _, t in triples:
            self.ids.setdefault(h, len(self.ids))
            self.ids.setdefault(t, len(self.ids))

    def names(self) -> tuple[str, ...]:
        return tuple(self.ids)


def _encode(triples: list[tuple[str, str, str]], entities: dict[str, int], relations: dict[str, int]) -> Tensor:
    """Unique triples as ids, in order of first appearance."""
    seen = dict.fromkeys((entities[h], relations[r], entities[t]) for h, r, t in triples)
    return torch.tensor(list(seen), dtype=torch.long).reshape(-1, 3)


def _build_protocol(
    split: str, paths: dict[str, Path], seed: int, num_candidates: int, val_queries: int | None,
    train_corruptions: int = 1,
) -> GrailProtocol:
    files = {rel: _read_triples(path) for rel, path in paths.items()}
    ind = f"{split}_ind"
    train = files[f"{split}/train.txt"]
    relations = {r: i for i, r in enumerate(sorted({r for _, r, _ in train}))}
    dropped = {}
    for rel in list(files):
        kept = [tr for tr in files[rel] if tr[1] in relations]
        if len(kept) != len(files[rel]):
            dropped[rel] = len(files[rel]) - len(kept)
        files[rel] = kept
    valid = files[f"{split}/valid.txt"]
    ind_train, ind_valid, ind_test = (files[f"{ind}/{f}"] for f in FILES)

    train_vocab, test_vocab = _Vocab(), _Vocab()
    train_vocab.add(train)
    train_vocab.add(valid)
    for part in (ind_train, ind_valid, ind_test):
        test_vocab.add(part)
    train_graph = _encode(train, train_vocab.ids, relations)
    valid_triples = _without_self_loops(_encode(valid, train_vocab.ids, relations))
    test_graph = _encode(ind_train, test_vocab.ids, relations)
    test_triples = _without_self_loops(_encode(ind_test, test_vocab.ids, relations))
    n_train, n_test = len(train_vocab.ids), len(test_vocab.ids)
    known_train = _keys(torch.cat([train_graph, valid_triples]), n_train, len(relations))
    known_test = _keys(
        torch.cat([test_graph, _encode(ind_valid, test_vocab.ids, relations), test_triples]), n_test, len(relations)
    )

    # One stream per purpose, so e.g. the test candidates do not depend on how many validation queries are ranked.
    rng = {purpose: _stream(seed, purpose) for purpose in _PURPOSES}
    positives = _without_self_loops(train_graph)
    graph_keys = _keys(train_graph, n_train, len(relations))
    corruption_blocks = [_corrupt(positives, n_train, len(relations), graph_keys, rng["train"], split)]
    corruption_blocks += [_corrupt(positives, n_train, len(relations), graph_keys, rng["train_more"], split)
                          for _ in range(train_corruptions - 1)]
    train_targets = torch.cat([positives, *corruption_blocks])
    valid_auc = torch.cat([valid_triples, _corrupt(valid_triples, n_train, len(relations), known_train, rng["valid"], split)])
    if val_queries is not None and val_queries < valid_triples.shape[0]:
        subset = np.sort(rng["subset"].choice(valid_triples.shape[0], size=val_queries, replace=False))
        rank_queries = valid_triples[torch.from_numpy(subset)]
    else:
        rank_queries = valid_triples
    valid_ranking, valid_padded = _ranking(
        rank_queries, n_train, len(relations), known_train, num_candidates, rng["valid_rank"], split
    )
    test_auc = torch.cat([test_triples, _corrupt(test_triples, n_test, len(relations), known_test, rng["test"], split)])
    test_ranking, test_padded = _ranking(
        test_triples, n_test, len(relations), known_test, num_candidates, rng["test_rank"], split
    )
    return GrailProtocol(
        name=split,
        seed=seed,
        num_candidates=num_candidates,
        relation_names=tuple(relations),
        train_entities=train_vocab.names(),
        test_entities=test_vocab.names(),
        train_graph=train_graph,
        test_graph=test_graph,
        train_targets=train_targets,
        valid_auc=valid_auc,
        valid_ranking=valid_ranking,
        test_auc=test_auc,
        test_ranking=test_ranking,
        dropped=dropped,
        padded_lists={
            **{f"valid_{side}": n for side, n in valid_padded.items()},
            **{f"test_{side}": n for side, n in test_padded.items()},
        },
        train_corruptions=train_corruptions,
    )


# One random stream per purpose, so e.g. the test candidates do not depend on how many validation queries
# are ranked. A new purpose goes last: the streams before it, and so every earlier target, stay as they were.
_PURPOSES = ("train", "valid", "subset", "valid_rank", "test", "test_rank", "train_more", "thinning")


def _stream(seed: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng([seed, _PURPOSES.index(purpose)])


def thinned_training_graph(protocol: GrailProtocol, keep: float) -> tuple[Tensor, Tensor]:
    """The graph the training targets are extracted from when ``train_graph_keep`` is ``keep``: each
    fact of ``protocol.train_graph`` kept with probability ``keep`` (seeded by the protocol's seed), and
    each fact's row in it (-1 where dropped). ``keep`` 1 is the whole graph.

    GraIL's inductive test graphs of FB15k-237 and NELL are about a third sparser than their training
    graphs (mean degree 3.65 against 5.33 on fb237_v1): a classifier trained on the denser graph's
    subgraphs and root inputs reads the test graph's as weaker evidence than it is. Training on a thinned
    graph shows it sparser neighbourhoods; validation and test keep their whole graphs.
    """
    graph = protocol.train_graph
    if keep >= 1:
        return graph, torch.arange(graph.shape[0])
    kept = torch.from_numpy(_stream(protocol.seed, "thinning").random(graph.shape[0]) < keep)
    row = torch.full((graph.shape[0],), -1, dtype=torch.long)
    row[kept] = torch.arange(int(kept.sum()))
    return graph[kept], row


def _without_self_loops(triples: Tensor) -> Tensor:
    """A triple ``(e, r, e)`` has no enclosing subgraph (its two roots coincide); it is not a target."""
    return triples[triples[:, 0] != triples[:, 2]]


def _keys(triples: Tensor, num_entities: int, num_relations: int) -> np.ndarray:
    """Sorted unique int64 keys of triples, for membership tests."""
    t = triples.numpy()
    return np.unique((t[:, 0] * num_relations + t[:, 1]) * num_entities + t[:, 2])


def _is_known(triples: np.ndarray, keys: np.ndarray, num_entities: int, num_relations: int) -> np.ndarray:
    k = (triples[:, 0] * num_relations + triples[:, 1]) * num_entities + triples[:, 2]
    pos = np.minimum(np.searchsorted(keys, k), max(len(keys) - 1, 0))
    return (keys[pos] == k) if len(keys) else np.zeros(len(k), dtype=bool)


def _corrupt(
    triples: Tensor, num_entities: int, num_relations: int, known: np.ndarray, rng: np.random.Generator, split: str
) -> Tensor:
    """One corruption per triple: head or tail (probability 1/2) replaced by a uniform entity so that
    the result is neither a known triple nor a self-loop; redrawn until it is."""
    t = triples.numpy()
    out = t.copy()
    replace_head = rng.random(len(t)) < 0.5
    todo = np.arange(len(t))
    for _ in range(10_000):
        if todo.size == 0:
            return torch.from_numpy(out)
        cand = t[todo].copy()
        drawn = rng.integers(0, num_entities, size=todo.size)
        head = replace_head[todo]
        cand[head, 0] = drawn[head]
        cand[~head, 2] = drawn[~head]
        ok = (cand[:, 0] != cand[:, 2]) & ~_is_known(cand, known, num_entities, num_relations)
        out[todo[ok]] = cand[ok]
        todo = todo[~ok]
    raise ConfigError(f"GraIL split {split}: some triples have no corruption that is not a known triple")


def _ranking(
    queries: Tensor,
    num_entities: int,
    num_relations: int,
    known: np.ndarray,
    num_candidates: int,
    rng: np.random.Generator,
    split: str,
) -> tuple[Tensor, dict[str, int]]:
    """``[2, Q, C, 3]`` candidate lists (head replaced, tail replaced), the true triple first, and
    how many lists of each side had to repeat corruptions (fewer than ``C - 1`` exist)."""
    q = queries.numpy()
    lists = []
    padded: dict[str, int] = {}
    for column in (0, 2):  # the entity that is replaced
        keep = 2 - column
        # Random order of all entities per query; excluded ones (true triples, self-loops) sort last.
        order = rng.random((len(q), num_entities))
        everyone = np.arange(num_entities)
        for start in range(0, len(q), 256):  # bounded [chunk, num_entities] candidate matrices
            chunk = q[start : start + 256]
            cand = np.repeat(chunk[:, None, :], num_entities, axis=1)
            cand[:, :, column] = everyone
            bad = _is_known(cand.reshape(-1, 3), known, num_entities, num_relations).reshape(len(chunk), num_entities)
            bad |= everyone[None, :] == chunk[:, keep : keep + 1]
            order[start : start + len(chunk)][bad] = np.inf
        need = num_candidates - 1
        picked = np.argsort(order, axis=1, kind="stable")[:, :need]
        if picked.shape[1] < need:  # a graph with fewer entities than candidates: every list is padded below
            picked = np.concatenate([picked, np.zeros((len(q), need - picked.shape[1]), dtype=picked.dtype)], axis=1)
        available = np.isfinite(order).sum(axis=1)
        if (available == 0).any():
            raise ConfigError(f"GraIL split {split}: a query has no corruption that is not a true triple")
        short = np.flatnonzero(available < need)
        for i in short:  # too few corruptions exist: fill the list by drawing again among them, as GraIL's sampler does
            picked[i, available[i] :] = picked[i, rng.integers(0, available[i], size=need - available[i])]
        padded[("head", "tail")[column // 2]] = len(short)
        cand = np.repeat(q[:, None, :], num_candidates, axis=1)
        cand[:, 1:, column] = picked
        lists.append(cand)
    return torch.from_numpy(np.stack(lists)).long(), padded


# --------------------------------------------------------------------------------------------- subgraphs


@dataclass(frozen=True)
class GrailData:
    """One split ready to train and score on: the protocol and every target's enclosing subgraph.

    Each ``PackedGraphs`` holds one graph per triple of the matching protocol tensor, in the same
    order (ranking tensors flattened, ``[2, Q, C, 3] -> [2 * Q * C]``, so scores ``.view(2 * Q, C)``
    have the true triple in column 0). Graph attributes: ``head_index``, ``tail_index`` (local node
    index of the roots), ``relation`` (query relation id), ``root_relations``
    (:func:`root_relation_counts`), ``root_pagerank`` (:func:`nsm.ppr.root_pagerank` on the whole graph,
    times its entity count); ``y`` is 1 for a true triple, else 0.
    """

    name: str
    protocol: GrailProtocol
    hops: int
    max_nodes: int
    train: PackedGraphs  # protocol.train_targets: every fact, then K blocks of corruptions
    valid: PackedGraphs  # protocol.valid_auc
    valid_ranking: PackedGraphs  # protocol.valid_ranking
    test: PackedGraphs  # protocol.test_auc
    test_ranking: PackedGraphs  # protocol.test_ranking
    stats: dict[str, float | int]  # extraction_s, capped (subgraphs over max_nodes), largest (uncapped nodes), ...

    @property
    def relation_names(self) -> tuple[str, ...]:
        return self.protocol.relation_names

    @property
    def num_relations(self) -> int:
        return len(self.protocol.relation_names)

    @property
    def node_feature_names(self) -> tuple[str, ...]:
        return node_feature_names(self.hops)

    @property
    def num_node_features(self) -> int:
        return 2 * (self.hops + 1)

    @property
    def num_candidates(self) -> int:
        return self.protocol.num_candidates

    @property
    def train_corruptions(self) -> int:
        """K: the training graphs are every fact, then K blocks of one corruption of each fact."""
        return self.protocol.train_corruptions

    def training_pairs_with_paths(self) -> PackedGraphs:
        """The training graphs without the pathless pairs: a fact whose enclosing subgraph holds no
        fact (no path of at most ``hops`` between its head and tail but itself) and its corruptions.
        The result keeps ``train``'s layout: the kept facts, then K blocks of their corruptions.

        Such a fact gives a subgraph classifier no structure to learn from, only a positive label on
        the same empty graph most corruptions have, which teaches it to rank empty candidates high.
        How common they are differs by split and side (nell_v1: 37 % of the training facts, 4 % of
        validation's, none of the test's), so whether to leave them out is a config key
        (``train_pathless_facts``) chosen on validation like any other.
        """
        facts = len(self.train) // (1 + self.train_corruptions)
        kept = torch.nonzero(self.train.num_edges[:facts] > 0).view(-1)
        return self.train.subset(torch.cat([kept + block * facts for block in range(1 + self.train_corruptions)]))


_PARTS = ("train", "valid", "valid_ranking", "test", "test_ranking")
_PROTOCOL_TENSORS = (
    "train_graph",
    "test_graph",
    "train_targets",
    "valid_auc",
    "valid_ranking",
    "test_auc",
    "test_ranking",
)


def load_grail(
    name: str,
    root: str | Path | None = None,
    *,
    seed: int = 0,
    hops: int = DEFAULT_HOPS,
    max_nodes: int = DEFAULT_MAX_NODES,
    num_candidates: int = DEFAULT_NUM_CANDIDATES,
    val_queries: int | None = DEFAULT_VAL_QUERIES,
    train_corruptions: int = 1,
    train_graph_keep: float = 1.0,
) -> GrailData:
    """Loads split ``name`` with every enclosing subgraph, from the cache or by building and caching it.

    ``root`` is the data folder (default ``nsm.data._cache.default_root()``); files go to
    ``<root>/grail/raw``, subgraphs to ``<root>/grail/processed``. Deterministic in all arguments.
    """
    split = canonical_split(name)
    seed, num_candidates, val_queries, train_corruptions = _check_protocol_args(
        seed, num_candidates, val_queries, train_corruptions)
    hops = _check_int(hops, "hops", 1, 16)
    max_nodes = _check_int(max_nodes, "max_nodes", 2, 1 << 20)
    train_graph_keep = _check_fraction(train_graph_keep, "train_graph_keep")
    meta: dict[str, Any] = {
        "format": _FORMAT,
        "split": split,
        "seed": seed,
        "hops": hops,
        "max_nodes": max_nodes,
        "num_candidates": num_candidates,
        "val_queries": -1 if val_queries is None else val_queries,
        "train_corruptions": train_corruptions,
        "train_graph_keep": train_graph_keep,
    }
    folder = _data_root(root) / "grail" / "processed"
    path = folder / (
        f"{split}-f{_FORMAT}-k{hops}-m{max_nodes}-c{num_candidates}-v{meta['val_queries']}-n{train_corruptions}-g{train_graph_keep:g}-s{seed}.pt"
    )
    cached = _load_cached(path, meta)
    if cached is not None:
        return cached
    protocol = _build_protocol(split, raw_files(split, root), seed, num_candidates, val_queries, train_corruptions)
    start = time.perf_counter()
    parts = _extract_all(protocol, hops, max_nodes, train_graph_keep)
    stats = {
        "extraction_s": time.perf_counter() - start,
        "graphs": sum(len(p) for p, _ in parts.values()),
        "capped": sum(int((u > max_nodes).sum()) for _, u in parts.values()),
        "largest": max(int(u.max()) if u.numel() else 0 for _, u in parts.values()),
    }
    data = GrailData(
        name=split,
        protocol=protocol,
        hops=hops,
        max_nodes=max_nodes,
        stats=stats,
        **{part: packed for part, (packed, _) in parts.items()},
    )
    try:
        _cache.save(path, _payload(data, meta))
    except OSError as exc:
        warnings.warn(f"could not cache {split} subgraphs at {path}: {exc}", RuntimeWarning, stacklevel=2)
    return data


def _extract_all(
    protocol: GrailProtocol, hops: int, max_nodes: int, train_graph_keep: float = 1.0
) -> dict[str, tuple[PackedGraphs, Tensor]]:
    n_train, n_test = len(protocol.train_entities), len(protocol.test_entities)
    # train_targets: every fact (a row of train_graph that is not a self-loop), then K blocks of corruptions;
    # each leaves out its fact, where the (thinned) graph it is extracted from still holds it.
    graph = protocol.train_graph
    facts = torch.nonzero(graph[:, 0] != graph[:, 2]).view(-1)
    training_graph, row = thinned_training_graph(protocol, train_graph_keep)
    source = {"train": row[facts].repeat(1 + protocol.train_corruptions)}
    jobs = {
        "train": (training_graph, n_train, protocol.train_targets, protocol.train_labels()),
        "valid": (protocol.train_graph, n_train, protocol.valid_auc, GrailProtocol.auc_labels(protocol.valid_auc)),
        "valid_ranking": (protocol.train_graph, n_train, *_flat_ranking(protocol.valid_ranking)),
        "test": (protocol.test_graph, n_test, protocol.test_auc, GrailProtocol.auc_labels(protocol.test_auc)),
        "test_ranking": (protocol.test_graph, n_test, *_flat_ranking(protocol.test_ranking)),
    }
    # Imported here: nsm.ppr scores the protocol this module defines.
    from nsm.ppr import pagerank_matrix

    with one_thread():
        whole = pagerank_matrix(protocol.train_graph, n_train)
        pagerank = {"train": whole if train_graph_keep >= 1 else pagerank_matrix(training_graph, n_train),
                    "valid": whole, "test": pagerank_matrix(protocol.test_graph, n_test)}
        return {
            part: _pack(graph, n, targets, labels, protocol.num_relations, hops, max_nodes, source.get(part),
                        pagerank[part.split("_")[0]])
            for part, (graph, n, targets, labels) in jobs.items()
        }


def _flat_ranking(ranking: Tensor) -> tuple[Tensor, Tensor]:
    labels = torch.zeros(ranking.shape[:3], dtype=torch.long)
    labels[:, :, 0] = 1
    return ranking.reshape(-1, 3), labels.reshape(-1)


def _pack(
    graph: Tensor, num_entities: int, targets: Tensor, labels: Tensor, num_relations: int, hops: int, max_nodes: int,
    source_fact: Tensor | None = None, pagerank: Tensor | None = None,
) -> tuple[PackedGraphs, Tensor]:
    """Every target's enclosing subgraph, packed. ``source_fact[i]`` is the fact of ``graph`` that
    target ``i`` was made from (default: the target itself where the graph holds it): the roots'
    relation counts and PageRank leave it out. ``pagerank`` is ``graph``'s PPR matrix, computed when
    not given."""
    from nsm.ppr import root_pagerank

    fact_keys = torch.from_numpy(_keys(graph, num_entities, num_relations))
    key_of_fact = (graph[:, 0] * num_relations + graph[:, 1]) * num_entities + graph[:, 2]
    fact_by_key = torch.argsort(key_of_fact)
    target_keys = (targets[:, 0] * num_relations + targets[:, 1]) * num_entities + targets[:, 2]
    pos = torch.searchsorted(fact_keys, target_keys).clamp(max=max(fact_keys.numel() - 1, 0))
    held = fact_keys[pos] == target_keys if fact_keys.numel() else torch.zeros_like(target_keys, dtype=torch.bool)
    target_fact = torch.where(held, fact_by_key[pos], -1)
    sub = extract(graph, num_entities, targets, target_fact, hops, max_nodes)
    count = targets.shape[0]
    left_out = target_fact if source_fact is None else source_fact
    packed = PackedGraphs(
        x=sub.x,
        edge_index=sub.edge_index,
        edge_type=sub.edge_type,
        node_ptr=sub.node_ptr,
        edge_ptr=sub.edge_ptr,
        y=labels,
        edge_attr=torch.ones(sub.edge_type.shape[0], 1, dtype=torch.uint8),  # every fact is certain
        graph_attrs={
            "head_index": torch.zeros(count, dtype=torch.long),  # extraction puts the head first
            "tail_index": torch.ones(count, dtype=torch.long),
            "relation": targets[:, 1].clone(),
            "root_relations": root_relation_counts(graph, num_entities, num_relations, targets, left_out),
            # relative to the uniform 1 / n, so that graphs of different sizes read alike
            "root_pagerank": (num_entities * root_pagerank(graph, num_entities, targets, left_out,
                                                           matrix=pagerank)).float(),
        },
    )
    return packed, sub.uncapped_nodes


def root_relation_counts(
    graph: Tensor, num_entities: int, num_relations: int, targets: Tensor, left_out: Tensor
) -> Tensor:
    """``[T, 4 * num_relations]`` uint8: for each target ``(h, r, t)``, how many facts of each relation
    leave ``h``, enter ``h``, leave ``t`` and enter ``t`` (four blocks of ``num_relations``, counts
    capped at 255), in the graph without the fact ``left_out[i]`` (a row of ``graph``, or -1 for none).

    The roots' relational context (as SNRI, Xu et al. 2022, adds to GraIL): the relations a root
    takes part in say what kind of entity it is without naming it, and they exist when the enclosing
    subgraph is empty, where the distance labels alone make every candidate look alike. A training
    target leaves out the fact it was made from (a positive its own fact, a corruption the fact it
    corrupts), so each is counted as a test triple is, in a graph that lacks the true triple; counting
    the fact for the corruption only would tell the two apart by the root they share.
    """
    out_counts = torch.zeros(num_entities * num_relations, dtype=torch.int32)
    in_counts = torch.zeros_like(out_counts)
    if graph.numel():
        ones = torch.ones(graph.shape[0], dtype=torch.int32)
        out_counts.index_add_(0, graph[:, 0] * num_relations + graph[:, 1], ones)
        in_counts.index_add_(0, graph[:, 2] * num_relations + graph[:, 1], ones)
    out_counts, in_counts = out_counts.view(num_entities, num_relations), in_counts.view(num_entities, num_relations)
    head, tail = targets[:, 0], targets[:, 2]
    counts = torch.cat([out_counts[head], in_counts[head], out_counts[tail], in_counts[tail]], dim=1)
    rows = torch.nonzero(left_out >= 0).view(-1)
    if rows.numel():  # the left-out fact (a, r, b) counted once out of a and once into b
        a, r, b = graph[left_out[rows]].unbind(1)
        for block, (end, root) in enumerate(((a, head), (b, head), (a, tail), (b, tail))):
            counts[rows, block * num_relations + r] -= (end == root[rows]).int()
    return counts.clamp_(0, 255).to(torch.uint8)


def _payload(data: GrailData, meta: dict[str, Any]) -> dict[str, Any]:
    p = data.protocol
    return {
        **meta,
        "relation_names": list(p.relation_names),
        "train_entities": list(p.train_entities),
        "test_entities": list(p.test_entities),
        "dropped": dict(p.dropped),
        "padded_lists": dict(p.padded_lists),
        "stats": dict(data.stats),
        "protocol": {key: getattr(p, key) for key in _PROTOCOL_TENSORS},
        "parts": {part: getattr(data, part).to_dict() for part in _PARTS},
    }


def _load_cached(path: Path, meta: dict[str, Any]) -> GrailData | None:
    """The cached split, or None when the file is missing, unreadable, stale or inconsistent."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - a truncated or foreign file is rebuilt, never trusted
        return None
    try:
        if any(payload[k] != v for k, v in meta.items()):
            return None
        protocol = GrailProtocol(
            name=meta["split"],
            seed=meta["seed"],
            num_candidates=meta["num_candidates"],
            relation_names=tuple(payload["relation_names"]),
            train_entities=tuple(payload["train_entities"]),
            test_entities=tuple(payload["test_entities"]),
            dropped=dict(payload["dropped"]),
            padded_lists=dict(payload["padded_lists"]),
            train_corruptions=meta["train_corruptions"],
            **{key: payload["protocol"][key] for key in _PROTOCOL_TENSORS},
        )
        parts = {part: PackedGraphs.from_dict(payload["parts"][part]) for part in _PARTS}
        expected = {
            "train": protocol.train_targets.shape[0],
            "valid": protocol.valid_auc.shape[0],
            "valid_ranking": protocol.valid_ranking[..., 0].numel(),
            "test": protocol.test_auc.shape[0],
            "test_ranking": protocol.test_ranking[..., 0].numel(),
        }
        if any(len(parts[k]) != v for k, v in expected.items()):
            return None
        return GrailData(
            name=meta["split"],
            protocol=protocol,
            hops=meta["hops"],
            max_nodes=meta["max_nodes"],
            stats=dict(payload["stats"]),
            **parts,
        )
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None


__all__ = [
    "COMMIT",
    "DEFAULT_HOPS",
    "DEFAULT_MAX_NODES",
    "DEFAULT_NUM_CANDIDATES",
    "DEFAULT_VAL_QUERIES",
    "ENV_DIR",
    "MAX_TRAIN_CORRUPTIONS",
    "FILES",
    "GROUP",
    "GrailData",
    "PUBLISHED",
    "GrailProtocol",
    "SPLITS",
    "URL",
    "canonical_split",
    "grail_protocol",
    "is_split",
    "load_grail",
    "node_feature_names",
    "raw_files",
    "resolve",
    "thinned_training_graph",
]
