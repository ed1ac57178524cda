"""polydiff-dense quickstart: held-out warped pairs with exact flow, a classical matcher and
the metrics (the README shows this file; tests/test_readme.py runs it).

Usage: python examples/quickstart.py OUT_DIR
"""

import sys
from pathlib import Path

from polydiff.dense.corruptions import corrupt
from polydiff.dense.diffmatch.evaluate import heldout_pairs, methods, score_method
from polydiff.dense.flow import flow_to_color, read_flo, write_flo
from polydiff.dense.images import write_png

out = Path(sys.argv[1] if len(sys.argv) > 1 else "dense-quickstart")
pairs = heldout_pairs(4)                      # warps of photographs never used in training
daisy = methods(None, opencv=False)["argmax_daisy"]   # DAISY descriptors + cost-volume argmax
for corruption in ("clean", "noise"):
    m = score_method(daisy, pairs, corruption)
    print(f"argmax_daisy {corruption:>5}: AEPE {m['aepe']:.2f} px, PCK-3 {m['pck3']:.2f}")

p = pairs[0]
flow = daisy(p.a, corrupt(p.b, "jpeg", severity=2))
write_flo(out / "flow.flo", flow)                              # Middlebury .flo
write_png(out / "flow.png", flow_to_color(flow))               # colour-coded flow
assert read_flo(out / "flow.flo").shape == (2, 128, 128)
print(f"wrote {out / 'flow.flo'} and {out / 'flow.png'}")
