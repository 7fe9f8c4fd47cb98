"""Neuromorphic export: spikequant networks to and from NIR (Neuromorphic Intermediate
Representation).

* :func:`to_nir` turns a sequential spiking network into a :class:`nir.NIRGraph` (BN folded,
  ATIF-u output scaling folded into the next layer, discrete-time neurons mapped to NIR IF/LIF).
* :func:`from_nir` builds spikequant modules back from such a graph.
* :func:`write_nir` / :func:`read_nir` store a graph in NIR's HDF5 format (atomic write).

See ``docs/export.md`` for the parameter mapping and what NIR cannot express.
"""

from .from_nir import ElementwiseScale, ImportedNetwork, from_nir
from .io import read_nir, write_nir
from .to_nir import to_nir

__all__ = ["ElementwiseScale", "ImportedNetwork", "from_nir", "read_nir", "to_nir", "write_nir"]
