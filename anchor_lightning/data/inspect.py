"""What a data module packed, as text: statistics and one row drawn in ASCII (the ``inspect`` verb,
``anchor_lightning/commands/inspect.py``)."""

from __future__ import annotations

import numpy as np

from anchor_lightning.data.packing import PAD_DOC, SHARED_ANCHOR_DOC, causal_pairs, position_ids
from anchor_lightning.errors import UserError


def block_mask(doc_ids: np.ndarray, mode: str, layout: str, width: int) -> list[str]:
    """The row's attention mask at ``width`` x ``width`` blocks, exact per block."""
    t = len(doc_ids)
    edges = np.linspace(0, t, min(width, t) + 1).astype(int)
    blocks = [set(doc_ids[a:b].tolist()) for a, b in zip(edges[:-1], edges[1:])]
    lines = []
    for i, queries in enumerate(blocks):
        cells = []
        for j, keys in enumerate(blocks):
            if j > i:
                allowed = False
            elif mode == "full":
                allowed = True
            else:
                allowed = bool(queries & keys) or (layout == "shared" and j == 0)
            cells.append("#" if allowed else ".")
        lines.append("".join(cells))
    return lines


def describe(datamodule, part: str = "train", row: int = 0, width: int = 64, snippet: int = 48) -> str:
    rows = datamodule.train_rows if part == "train" else datamodule.val_rows
    if rows is None or len(rows) == 0:
        raise UserError(f"the {part} set is empty", field="--part")
    if not 0 <= row < len(rows):
        raise UserError(f"row {row} does not exist ({part} has {len(rows)} rows)", field="--row")
    stats = rows.stats
    per_row = np.diff(np.asarray(rows.chunk_offsets))
    slots = stats["rows"] * stats["slots"]
    out = [
        f"{part}: {len(rows)} rows of {stats['slots']} slots, mode {datamodule.mode}, layout {datamodule.layout}",
        f"documents: {stats['documents']} ({stats['empty_documents']} empty, dropped), packed as {stats['chunks']} chunks; "
        f"{stats['split_documents']} documents split across rows",
        f"tokens: {stats['source_tokens']} in, {stats['content_tokens']} placed, {stats['stripped_tokens']} leading BOS replaced, "
        f"{stats['source_tokens'] - stats['content_tokens'] - stats['stripped_tokens']} dropped",
        f"slots: {stats['content_tokens'] / slots:.1%} content, {stats['first_tokens'] / slots:.1%} first tokens, "
        f"{stats.get('tag_tokens', 0) / slots:.1%} tags, {stats['padding'] / slots:.1%} padding",
        f"documents per row: mean {per_row.mean():.2f}, min {per_row.min()}, max {per_row.max()}",
    ]
    if datamodule.mode != "full":
        kept = full = 0
        for i in range(len(rows)):
            doc_ids = rows.row(i).doc_ids
            kept += causal_pairs(doc_ids, datamodule.mode, datamodule.layout)
            full += causal_pairs(doc_ids, "full", datamodule.layout)
        out.append(
            f"attention: the {datamodule.mode} mask keeps {kept / full:.1%} of full attention's causal pairs over these "
            f"rows ({1 - kept / full:.1%} differ)"
        )
    out += [""]
    packed = rows.row(row)
    positions = position_ids(packed.doc_ids, packed.is_first, datamodule.mode)
    out.append(f"row {row}: {len(packed.chunk_sources)} packed documents")
    for chunk, (source, offset) in enumerate(packed.chunk_sources.tolist()):
        where = np.flatnonzero(packed.doc_ids == chunk)
        text = datamodule.tokenizer.decode(packed.input_ids[where][:snippet].tolist())
        out.append(
            f"  doc {chunk:3d}  slots {where[0]:6d}-{where[-1]:<6d} positions {positions[where[0]]}-{positions[where[-1]]}"
            f"  source document {source} from token {offset}: {text!r}"
        )
    anchors = int((packed.doc_ids == SHARED_ANCHOR_DOC).sum())
    padding = int((packed.doc_ids == PAD_DOC).sum())
    out.append(f"  shared anchor slots: {anchors}; padding slots: {padding}")
    out.append("")
    cells = block_mask(packed.doc_ids, datamodule.mode, datamodule.layout, width)
    block = len(packed.doc_ids) / len(cells)
    out.append(f"attention mask, one character = {block:g} x {block:g} slots (rows: queries, columns: keys)")
    out.extend(f"  {line}" for line in cells)
    return "\n".join(out)
