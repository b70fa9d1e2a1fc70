"""RFC 9162 Merkle hashing against the certificate-transparency known answers."""

from __future__ import annotations

import hashlib

import pytest

from core import merkle

# The reference leaves and roots published with certificate-transparency's Merkle code.
LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, audit path)
INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (old size, new size, proof)
CONSISTENCY = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

HASHES = [merkle.leaf_hash(leaf) for leaf in LEAVES]
SUBTREE = merkle.subtree_from_leaves(HASHES)


def _root(size: int) -> bytes:
    return bytes.fromhex(ROOTS[size - 1])


def test_the_empty_tree_is_the_hash_of_nothing():
    assert merkle.tree_root(0, SUBTREE) == hashlib.sha256(b"").digest()
    assert merkle.root_from_leaves([]) == merkle.EMPTY_ROOT


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_the_reference(size):
    assert merkle.tree_root(size, SUBTREE).hex() == ROOTS[size - 1]
    assert merkle.root_from_leaves(LEAVES[:size]).hex() == ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_proofs_match_the_reference(index, size, path):
    built = merkle.inclusion_proof(index, size, SUBTREE)
    assert [p.hex() for p in built] == path
    merkle.verify_inclusion(index, size, HASHES[index], built, _root(size))


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_proofs_match_the_reference(old, new, proof):
    built = merkle.consistency_proof(old, new, SUBTREE)
    assert [p.hex() for p in built] == proof
    merkle.verify_consistency(old, new, _root(old), _root(new), built)


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_altered_inclusion_proofs_fail(index, size, path):
    proof = [bytes.fromhex(p) for p in path]
    root, leaf = _root(size), HASHES[index]
    wrong = [
        (index + 1, size, leaf, proof, root),
        (index, size * 2, leaf, proof, root),
        (index, size, merkle.leaf_hash(b"other"), proof, root),
        (index, size, leaf, proof, merkle.EMPTY_ROOT),
        (index, size, leaf, [*proof, root], root),
        (index, size, leaf, proof[:-1], root),
        (index, size, leaf, [merkle.EMPTY_ROOT, *proof[1:]], root),
    ]
    for case in wrong:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(*case)


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_altered_consistency_proofs_fail(old, new, proof):
    path = [bytes.fromhex(p) for p in proof]
    wrong = [
        (old - 1 or old + 1, new, _root(old), _root(new), path),
        (old, new, _root(new), _root(old), path),
        (old, new, _root(old), _root(new), path[:-1]),
        (old, new, _root(old), _root(new), [*path, path[0]]),
        (old, new, _root(old), _root(new), []),
        (old, new, _root(old), merkle.EMPTY_ROOT, path),
    ]
    for case in wrong:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(*case)


def test_trivial_consistency_cases():
    merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, _root(5), [])
    merkle.verify_consistency(3, 3, _root(3), _root(3), [])
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(3, 3, _root(3), _root(4), [])
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(4, 3, _root(4), _root(3), [])


@pytest.mark.parametrize("size", [1, 2, 3, 5, 17, 64, 100])
def test_every_proof_of_every_size_verifies(size):
    hashes = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    subtree = merkle.subtree_from_leaves(hashes)
    stream = merkle.StreamingRoot()
    roots = []
    for h in hashes:
        stream.append(h)
        roots.append(stream.root())
    assert roots[-1] == merkle.tree_root(size, subtree)
    for index in range(size):
        proof = merkle.inclusion_proof(index, size, subtree)
        merkle.verify_inclusion(index, size, hashes[index], proof, roots[-1])
    for old in range(1, size + 1):
        proof = merkle.consistency_proof(old, size, subtree)
        merkle.verify_consistency(old, size, roots[old - 1], roots[-1], proof)
