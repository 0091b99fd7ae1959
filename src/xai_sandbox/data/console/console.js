// The console's only script: follows a full verification of the audit log.
"use strict";
(function () {
  const box = document.getElementById("verification");
  if (!box) { return; }
  const bar = document.getElementById("progress");
  const text = document.getElementById("progress-text");
  const show = (id, on) => { document.getElementById(id).hidden = !on; };
  async function poll() {
    const response = await fetch(box.dataset.statusUrl, { credentials: "same-origin" });
    if (!response.ok) { return; }
    const run = await response.json();
    bar.max = run.total || 1;
    bar.value = run.done;
    text.textContent = run.done + " / " + run.total;
    box.dataset.status = run.status;
    show("verify-running", run.status === "running");
    show("verify-passed", run.status === "passed");
    show("verify-failed", run.status === "failed" || run.status === "error");
    if (run.status === "passed") {
      const counts = document.getElementById("counts-template").innerHTML;
      box.querySelector(".counts").textContent = counts
        .replace("{entries}", run.entries).replace("{nodes}", run.nodes)
        .replace("{checkpoints}", run.checkpoints).replace("{seconds}", run.seconds);
    } else if (run.status !== "running") {
      const list = box.querySelector(".problems");
      list.replaceChildren(...(run.problems || []).map((p) => {
        const li = document.createElement("li");
        li.textContent = p;
        return li;
      }));
    } else {
      setTimeout(poll, 400);
    }
  }
  if (box.dataset.status === "running") { poll(); }
})();
