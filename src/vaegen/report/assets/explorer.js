// vaegen latent explorer: decodes latent points in the browser from weights embedded in the page.
// Reads its data from <script type="application/json" id="vaegen-data">; touches the DOM only
// through textContent and CSSOM, so no string from the data is ever parsed as HTML.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("vaegen-data").textContent);
  const [C, H, W] = data.image_shape;
  const P = C * H * W;
  const D = data.latent_dim;
  const E = data.extent;

  function bytes(b64) {
    const s = atob(b64);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  // Little-endian whatever the platform's byte order (a DataView reads it explicitly).
  function float32s(b64) {
    const b = bytes(b64);
    const v = new DataView(b.buffer);
    const out = new Float32Array(b.length / 4);
    for (let i = 0; i < out.length; i++) out[i] = v.getFloat32(4 * i, true);
    return out;
  }
  function uint16s(b64) {
    const b = bytes(b64);
    const v = new DataView(b.buffer);
    const out = new Uint16Array(b.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = v.getUint16(2 * i, true);
    return out;
  }

  // ---- decoders: (z: number[D], label) -> Float64Array(P) of pixel values in [0, 1], C x H x W
  function mlpDecoder(d) {
    const W3 = float32s(d.fc3_weight), b3 = float32s(d.fc3_bias);
    const W4 = float32s(d.fc4_weight), b4 = float32s(d.fc4_bias);
    const hidden = b3.length, inDim = D + data.num_classes, sigmoid = d.output === "sigmoid";
    const x = new Float64Array(inDim), h = new Float64Array(hidden), active = new Int32Array(hidden);
    return function (z, label) {
      x.fill(0);
      for (let i = 0; i < D; i++) x[i] = +z[i] || 0;
      if (data.num_classes) x[D + label] = 1;
      let n = 0;
      for (let j = 0; j < hidden; j++) {  // h = relu(fc3([z, one_hot]))
        let s = b3[j];
        const row = j * inDim;
        for (let i = 0; i < inDim; i++) s += W3[row + i] * x[i];
        h[j] = s;
        if (s > 0) active[n++] = j;  // ReLU zeros contribute nothing below: skip them
      }
      const out = new Float64Array(P);
      for (let p = 0; p < P; p++) {  // fc4(h), then the decoder mean
        let s = b4[p];
        const row = p * hidden;
        for (let k = 0; k < n; k++) s += W4[row + active[k]] * h[active[k]];
        out[p] = sigmoid ? 1 / (1 + Math.exp(-s)) : Math.min(1, Math.max(0, s));
      }
      return out;
    };
  }

  async function lookupDecoder(d) {
    const G = d.size;
    const atlases = await Promise.all(d.atlases.map(async (src) => {
      const img = new Image();
      img.src = src;
      await img.decode();
      const cv = document.createElement("canvas");
      cv.width = img.naturalWidth;
      cv.height = img.naturalHeight;
      const ctx = cv.getContext("2d", { willReadFrequently: true });
      ctx.drawImage(img, 0, 0);
      return ctx.getImageData(0, 0, cv.width, cv.height).data;
    }));
    const cell = (v) => Math.min(G - 1, Math.max(0, Math.round((v + E) / (2 * E) * (G - 1))));
    return function (z, label) {
      const px = atlases[data.num_classes ? label : 0];
      const col = cell(+z[0] || 0), row = G - 1 - cell(D > 1 ? +z[1] || 0 : 0);
      const out = new Float64Array(P);
      for (let c = 0; c < C; c++) {
        const channel = C === 3 ? c : 0;
        for (let y = 0; y < H; y++) {
          for (let x = 0; x < W; x++) {
            const at = ((row * H + y) * G * W + col * W + x) * 4 + channel;
            out[(c * H + y) * W + x] = px[at] / 255;
          }
        }
      }
      return out;
    };
  }

  // ---- the plane: latent means as a scatter, with axes
  const plane = document.getElementById("plane");
  const overlay = document.getElementById("overlay");
  const CSS = 560, M = { left: 46, right: 14, top: 14, bottom: 40 };
  const inner = CSS - M.left - M.right, innerH = CSS - M.top - M.bottom;
  const toPx = (v) => M.left + (v + E) / (2 * E) * inner;
  const toPy = (v) => M.top + (E - v) / (2 * E) * innerH;
  const dpr = Math.max(1, window.devicePixelRatio || 1);
  function context(cv) {
    cv.width = Math.round(CSS * dpr);
    cv.height = Math.round(CSS * dpr);
    const ctx = cv.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return ctx;
  }
  const pctx = context(plane), octx = context(overlay);

  const n = data.points ? data.points.n : 0;
  const xy = n ? float32s(data.points.xy) : new Float32Array(0);
  const labels = n && data.points.labels ? uint16s(data.points.labels) : null;
  const shown = new Set(data.colors.map((_, k) => k));

  function tickStep() {
    for (const s of [0.5, 1, 2, 5, 10, 20, 50, 100]) if (2 * E / s <= 10) return s;
    return 10 ** Math.ceil(Math.log10(E / 5));
  }
  function drawPlane() {
    const ctx = pctx;
    ctx.clearRect(0, 0, CSS, CSS);
    ctx.fillStyle = "#fbfcfd";
    ctx.fillRect(M.left, M.top, inner, innerH);
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillStyle = "#5b6573";
    ctx.strokeStyle = "#e6eaef";
    ctx.lineWidth = 1;
    const step = tickStep();
    ctx.textAlign = "center";
    for (let t = Math.ceil(-E / step) * step; t <= E + 1e-9; t += step) {
      const px = toPx(t), py = toPy(t);
      ctx.beginPath(); ctx.moveTo(px, M.top); ctx.lineTo(px, M.top + innerH); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(M.left, py); ctx.lineTo(M.left + inner, py); ctx.stroke();
      const label = String(+t.toFixed(2));
      ctx.fillText(label, px, M.top + innerH + 15);
      ctx.textAlign = "right";
      ctx.fillText(label, M.left - 6, py + 4);
      ctx.textAlign = "center";
    }
    ctx.fillText(data.axis_labels[0], M.left + inner / 2, CSS - 6);
    ctx.save();
    ctx.translate(12, M.top + innerH / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText(data.axis_labels[1], 0, 0);
    ctx.restore();
    ctx.strokeStyle = "#c9d0d8";
    ctx.strokeRect(M.left + 0.5, M.top + 0.5, inner - 1, innerH - 1);
    // points, one fill colour at a time (a class per pass keeps style changes to a minimum)
    ctx.save();
    ctx.beginPath();
    ctx.rect(M.left, M.top, inner, innerH);
    ctx.clip();
    ctx.globalAlpha = n > 3000 ? 0.55 : 0.8;
    const r = n > 3000 ? 1.25 : 2;
    for (let k = 0; k < data.colors.length; k++) {
      if (!shown.has(k)) continue;
      ctx.fillStyle = data.colors[k];
      for (let i = 0; i < n; i++) {
        if ((labels ? labels[i] : 0) !== k) continue;
        ctx.fillRect(toPx(xy[2 * i]) - r, toPy(xy[2 * i + 1]) - r, 2 * r, 2 * r);
      }
    }
    ctx.restore();
  }

  // ---- state and drawing of the decoded image
  const z = new Array(D).fill(0);
  let label = 0;
  const out = document.getElementById("decoded");
  out.width = W;
  out.height = H;
  const scale = 280 / Math.max(W, H);
  out.style.width = W * scale + "px";  // CSSOM, allowed by the page's CSP (no style attribute)
  out.style.height = H * scale + "px";
  const octxImg = out.getContext("2d");
  const image = octxImg.createImageData(W, H);
  const readout = document.getElementById("readout");
  let decode = null;

  function render() {
    const v = decode(z, label);
    const px = image.data;
    for (let i = 0; i < H * W; i++) {
      for (let c = 0; c < 3; c++) px[4 * i + c] = Math.round(255 * v[(C === 3 ? c : 0) * H * W + i]);
      px[4 * i + 3] = 255;
    }
    octxImg.putImageData(image, 0, 0);
    readout.textContent = "z = (" + z.map((v) => v.toFixed(2)).join(", ") + ")";
    octx.clearRect(0, 0, CSS, CSS);
    const px0 = toPx(Math.max(-E, Math.min(E, z[0]))), py0 = toPy(D > 1 ? Math.max(-E, Math.min(E, z[1])) : 0);
    octx.strokeStyle = "rgba(20, 30, 45, 0.35)";
    octx.setLineDash([4, 4]);
    octx.beginPath();
    octx.moveTo(px0, M.top); octx.lineTo(px0, M.top + innerH);
    if (D > 1) { octx.moveTo(M.left, py0); octx.lineTo(M.left + inner, py0); }
    octx.stroke();
    octx.setLineDash([]);
    octx.lineWidth = 2;
    octx.strokeStyle = "#111";
    octx.fillStyle = "#fff";
    octx.beginPath();
    octx.arc(px0, py0, 5, 0, 2 * Math.PI);
    octx.fill();
    octx.stroke();
    octx.lineWidth = 1;
  }

  function moveTo(ev) {
    const rect = overlay.getBoundingClientRect();
    const cx = (ev.clientX - rect.left) / rect.width * CSS, cy = (ev.clientY - rect.top) / rect.height * CSS;
    z[0] = Math.max(-E, Math.min(E, (cx - M.left) / inner * 2 * E - E));
    if (D > 1) z[1] = Math.max(-E, Math.min(E, E - (cy - M.top) / innerH * 2 * E));
    render();
  }

  function wire() {
    overlay.addEventListener("pointermove", moveTo);
    overlay.addEventListener("pointerdown", (ev) => { overlay.setPointerCapture(ev.pointerId); moveTo(ev); });
    overlay.addEventListener("keydown", (ev) => {
      const step = E / 40, keys = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [1, 1], ArrowDown: [1, -1] };
      const k = keys[ev.key];
      if (!k || (k[0] === 1 && D < 2)) return;
      ev.preventDefault();
      z[k[0]] = Math.max(-E, Math.min(E, z[k[0]] + k[1] * step));
      render();
    });
    const select = document.getElementById("label-select");
    if (select) {
      label = +select.value;
      select.addEventListener("change", () => { label = +select.value; render(); });
    }
    for (const input of document.querySelectorAll("input.zdim")) {
      const dim = +input.dataset.dim, shownValue = document.getElementById("zdim-value-" + dim);
      const update = () => {
        z[dim] = +input.value;
        shownValue.textContent = (+input.value).toFixed(2);
        render();
      };
      input.addEventListener("input", update);
      z[dim] = +input.value;
    }
    for (const button of document.querySelectorAll(".legend button")) {
      const k = +button.dataset.class;
      button.querySelector(".swatch").style.background = data.colors[k];
      button.addEventListener("click", () => {
        if (shown.has(k)) shown.delete(k); else shown.add(k);
        button.setAttribute("aria-pressed", String(shown.has(k)));
        drawPlane();
      });
    }
  }

  async function main() {
    decode = data.mode === "mlp" ? mlpDecoder(data.decoder) : await lookupDecoder(data.lookup);
    drawPlane();
    wire();
    render();
    // For tests and the curious: decode any latent point; returns C*H*W numbers in [0, 1].
    window.vaegenDecode = (zz, lab) => Array.from(decode(zz, lab || 0));
    window.vaegenState = () => ({ z: z.slice(), label: label });
    window.vaegenReady = true;
  }
  main().catch((e) => console.error("vaegen explorer failed:", e));
})();
