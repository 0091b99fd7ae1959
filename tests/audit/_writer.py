"""A writer process for the durability tests: appends decisions until killed.

After each commit returns it prints ``ack FIRST LAST ID...`` and flushes, so every line
the parent reads is an acknowledged write. Settings come from the environment.
"""

import random
import sys

from xai_sandbox.store import Store

store = Store()
rng = random.Random(int(sys.argv[1]))
mode = sys.argv[2]  # "single" or "batch"
limit = int(sys.argv[3]) if len(sys.argv) > 3 else 10**9
done = 0
while done < limit:
    if mode == "single":
        items = [store.record_decision(model_key="m@1", subject_id=f"s{rng.random()}",
                                       inputs={"x": done}, output={"y": 1},
                                       policy_version="p")]
    else:
        items = store.record_decisions([
            {"model_key": "m@1", "subject_id": f"s{rng.random()}", "inputs": {"x": done + i},
             "output": {"y": 1}, "policy_version": "p"} for i in range(rng.randint(1, 40))])
    done += len(items)
    print("ack", items[0].leaf_index, items[-1].leaf_index,
          " ".join(d.decision_id for d in items), flush=True)
