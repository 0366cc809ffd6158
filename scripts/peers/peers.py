#!/usr/bin/env python3
"""Runs keyframe's peers over labelled footage and scores them like `keyframe eval`.

Two peers, each fed every input frame of a sequence in name order:

  frigate  Frigate's "improved" motion detector, re-implemented from its
           description (docs/motion-eval.md): luma -> nearest resize to 100 px
           high -> contrast stretch between the 4th and 96th percentiles,
           smoothed over the last 50 frames -> Gaussian blur (sigma 1, 3x3) ->
           |frame - running average| -> threshold 30 -> dilate 3x3 ->
           external contours; a box per contour of area > 10 px. More than 80 %
           of the frame in contours ("lightning") starts a recalibration that
           lasts until the contours cover < 5 % with <= 4 boxes. As in
           Frigate's code, calibration only makes the average learn faster
           (alpha 0.2 instead of 0.01): its boxes are still reported. The
           average learns on still frames and, while there is motion, only
           after 10 consecutive motion frames.
  mog2     OpenCV's BackgroundSubtractorMOG2 with its defaults, at full
           resolution, then a 3x3 opening; motion when the foreground (255,
           shadows excluded) covers >= 0.1 % of the frame.

A frame is predicted positive when the peer flags any motion on it. The peers
have no event lifecycle, so events are runs of flagged frames merged across
gaps of at most 10 frames. Scoring follows shared/motion-data/README.md and
prints the JSON of `keyframe eval --json` (see docs/motion-eval.md):

  peers.py --peer frigate|mog2 [--json] DIR...
  peers.py --bench-mog2 VIDEO_OR_DIR

A DIR that has no input/ but has sequence subdirectories stands for them; a
sequence without frame_labels.csv is skipped with a note on stderr. Run it
through run.sh, which installs Debian's python3-opencv and python3-numpy.
"""

import argparse
import csv
import json
import os
import statistics
import sys
import time

# Events: flagged (or label-1) frames closer than this many frames apart are
# one event.
EVENT_GAP = 10
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
METRICS = (
    "precision",
    "recall",
    "f1",
    "event_precision",
    "event_recall",
    "false_events_per_1000_quiet",
)


class PeersError(Exception):
    """A clear, user-facing failure (bad directory, bad label file, bad frame)."""


# ---------------------------------------------------------------- scoring


def group_events(indices, gap=EVENT_GAP):
    """Groups sorted frame indices into inclusive (start, end) events.

    Two indices belong to the same event when at most `gap` frames lie
    between them.
    """
    events = []
    for i in indices:
        if events and i - events[-1][1] - 1 <= gap:
            events[-1][1] = i
        else:
            events.append([i, i])
    return [tuple(e) for e in events]


def overlaps(a, b):
    """Whether inclusive frame ranges a and b share a frame."""
    return a[0] <= b[1] and b[0] <= a[1]


def ratio(num, den):
    return None if den == 0 else num / den


def score(labels, flags, ms_per_frame=None):
    """Scores per-frame predictions against labels (1, 0 or -1 per frame).

    The first frame is don't care whatever its label (the data set's README:
    no detector has an earlier frame to compare it with), as in
    `keyframe eval`. Frame metrics count only frames labelled 0 or 1.
    Ground-truth events are
    runs of label-1 frames merged across gaps of <= EVENT_GAP frames (frames
    of any label in the gap). Predicted events are the same grouping of the
    flagged frames (all of them, even one that covers only don't-care frames,
    as keyframe eval counts them).
    """
    if len(labels) != len(flags):
        raise ValueError("labels and flags differ in length")
    labels = [-1] + list(labels[1:]) if labels else []
    tp = fp = fn = 0
    for lab, f in zip(labels, flags):
        if lab == 1:
            tp += f
            fn += not f
        elif lab == 0:
            fp += f
    positives = sum(1 for lab in labels if lab == 1)
    negatives = sum(1 for lab in labels if lab == 0)

    truth = group_events([i for i, lab in enumerate(labels) if lab == 1])
    predicted = group_events([i for i, f in enumerate(flags) if f])
    true_events = sum(1 for p in predicted if any(overlaps(p, t) for t in truth))
    found = sum(1 for t in truth if any(overlaps(p, t) for p in predicted))
    false_events = len(predicted) - true_events

    r = {k: None for k in METRICS}
    if positives:
        p = ratio(tp, tp + fp)
        rec = ratio(tp, tp + fn)
        r["precision"], r["recall"] = p, rec
        # Nothing right is F1 0, also when nothing was flagged (precision
        # 0/0 is null): a silent detector must not drop out of the mean.
        r["f1"] = 0.0 if tp == 0 else 2 * p * rec / (p + rec)
        r["event_precision"] = ratio(true_events, len(predicted))
        r["event_recall"] = ratio(found, len(truth))
    if negatives:
        r["false_events_per_1000_quiet"] = false_events * 1000 / negatives
    r.update(
        frames=len(labels),
        positives=positives,
        negatives=negatives,
        events=len(predicted),
        ms_per_frame=ms_per_frame,
    )
    return r


def overall(sequences):
    """Mean of each metric over the sequences with positive frames (metrics
    that are null on a sequence are left out of its mean), plus the events
    raised on the sequences without positives (all false alarms)."""
    scored = [s for s in sequences.values() if s["positives"] > 0]
    out = {}
    for k in METRICS:
        vals = [s[k] for s in scored if s[k] is not None]
        out[k] = statistics.fmean(vals) if vals else None
    out["events_on_quiet_sequences"] = sum(
        s["events"] for s in sequences.values() if s["positives"] == 0
    )
    return out


# ---------------------------------------------------------------- data


def expand(dirs, note):
    """Returns the sequence directories named by dirs, in order."""
    seqs = []
    for d in dirs:
        if not os.path.isdir(d):
            raise PeersError(f"{d}: not a directory")
        if os.path.isdir(os.path.join(d, "input")) or os.path.isfile(
            os.path.join(d, "frame_labels.csv")
        ):
            cands = [d]
        else:
            cands = sorted(
                os.path.join(d, n)
                for n in os.listdir(d)
                if os.path.isdir(os.path.join(d, n))
            )
            if not cands:
                raise PeersError(f"{d}: no input/ and no sequence subdirectories")
        for c in cands:
            if not os.path.isfile(os.path.join(c, "frame_labels.csv")):
                note(f"peers: skipping {os.path.basename(os.path.normpath(c))}: no frame_labels.csv")
                continue
            seqs.append(c)
    return seqs


def load_sequence(seq):
    """Returns (frame paths in name order, label per frame) for a sequence."""
    inp = os.path.join(seq, "input")
    if not os.path.isdir(inp):
        raise PeersError(f"{seq}: frame_labels.csv but no input/")
    files = sorted(n for n in os.listdir(inp) if n.lower().endswith(IMAGE_EXTS))
    if not files:
        raise PeersError(f"{inp}: no frames (.jpg, .png, .bmp)")
    by_file = {}
    path = os.path.join(seq, "frame_labels.csv")
    with open(path, newline="") as f:
        rows = csv.DictReader(f)
        if not rows.fieldnames or not {"file", "label"} <= set(rows.fieldnames):
            raise PeersError(f"{path}: want columns file and label, have {rows.fieldnames}")
        for n, row in enumerate(rows, start=2):
            try:
                lab = int(row["label"])
            except (TypeError, ValueError):
                raise PeersError(f"{path}:{n}: label {row['label']!r} is not 1, 0 or -1") from None
            if lab not in (1, 0, -1):
                raise PeersError(f"{path}:{n}: label {lab} is not 1, 0 or -1")
            if row["file"] in by_file:
                raise PeersError(f"{path}:{n}: {row['file']} labelled twice")
            by_file[row["file"]] = lab
    missing = [n for n in files if n not in by_file]
    extra = sorted(set(by_file) - set(files))
    if missing or extra:
        raise PeersError(
            f"{path}: labels do not match input/: "
            f"{len(missing)} frames unlabelled (first {missing[:1]}), "
            f"{len(extra)} labels without a frame (first {extra[:1]})"
        )
    return [os.path.join(inp, n) for n in files], [by_file[n] for n in files]


def read_frame(cv2, path, grey):
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    if img is None:
        raise PeersError(f"{path}: cannot decode the frame")
    return img


# ---------------------------------------------------------------- peers


class Frigate:
    """Frigate's improved motion detector (see the module doc)."""

    frame_height = 100
    threshold = 30
    contour_area = 10
    lightning = 0.8
    alpha = 0.01
    calibrating_alpha = 0.2
    contrast_history = 50
    persist_frames = 10
    grey = True

    def __init__(self, cv2, np, shape):
        self.cv2, self.np = cv2, np
        h, w = shape[:2]
        self.size = (self.frame_height * w // h, self.frame_height)  # (w, h)
        self.avg = np.zeros((self.size[1], self.size[0]), np.float32)
        self.contrast = np.zeros((self.contrast_history, 2), np.uint8)
        self.contrast[:, 1] = 255
        self.contrast_i = 0
        self.calibrating = True
        self.motion_frames = 0

    def step(self, grey):
        cv2, np = self.cv2, self.np
        small = cv2.resize(grey, self.size, interpolation=cv2.INTER_NEAREST)
        lo = np.percentile(small, 4).astype(np.uint8)
        hi = np.percentile(small, 96).astype(np.uint8)
        if lo < hi:  # a single-colour frame keeps the old stretch
            self.contrast[self.contrast_i] = [lo, hi]
            self.contrast_i = (self.contrast_i + 1) % len(self.contrast)
            avg_lo, avg_hi = np.mean(self.contrast, axis=0)
            small = np.clip(small, avg_lo, avg_hi)
            small = (((small - avg_lo) / (avg_hi - avg_lo)) * 255).astype(np.uint8)
        # Frigate uses scipy's gaussian_filter(sigma=1, radius=1): the same
        # 3x3 kernel, with scipy's "reflect" border.
        small = cv2.GaussianBlur(small, (3, 3), 1, borderType=cv2.BORDER_REFLECT)
        delta = cv2.absdiff(small, cv2.convertScaleAbs(self.avg))
        thresh = cv2.threshold(delta, self.threshold, 255, cv2.THRESH_BINARY)[1]
        thresh = cv2.dilate(thresh, None, iterations=1)
        contours, _ = cv2.findContours(thresh, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        total = 0.0
        boxes = 0
        for c in contours:
            a = cv2.contourArea(c)
            total += a
            if a > self.contour_area:
                boxes += 1
        pct = total / (self.size[0] * self.size[1])
        if pct < 0.05 and boxes <= 4:
            self.calibrating = False
        if pct > self.lightning:
            self.calibrating = True
        alpha = self.calibrating_alpha if self.calibrating else self.alpha
        if boxes:
            self.motion_frames += 1
            if self.motion_frames >= self.persist_frames:
                cv2.accumulateWeighted(small, self.avg, alpha)
        else:
            cv2.accumulateWeighted(small, self.avg, alpha)
            self.motion_frames = 0
        # Like Frigate, the boxes are reported while calibrating too:
        # calibration only speeds the average up.
        return boxes > 0


class MOG2:
    """OpenCV MOG2 with defaults, 3x3 opening, motion at >= 0.1 % of pixels."""

    min_fraction = 0.001
    grey = False  # MOG2 is given the frame as decoded (BGR), its usual input

    def __init__(self, cv2, np, shape):
        self.cv2 = cv2
        self.sub = cv2.createBackgroundSubtractorMOG2()
        self.kernel = np.ones((3, 3), np.uint8)
        self.min_pixels = self.min_fraction * shape[0] * shape[1]

    def step(self, frame):
        cv2 = self.cv2
        fg = self.sub.apply(frame)
        _, fg = cv2.threshold(fg, 254, 255, cv2.THRESH_BINARY)  # drop shadows (127)
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self.kernel)
        return cv2.countNonZero(fg) >= self.min_pixels


PEERS = {"frigate": Frigate, "mog2": MOG2}


def run_peer(cv2, np, peer_cls, seq):
    paths, labels = load_sequence(seq)
    peer = None
    flags = []
    spent = 0.0
    for p in paths:
        frame = read_frame(cv2, p, peer_cls.grey)
        if peer is None:
            shape = frame.shape
            peer = peer_cls(cv2, np, shape)
        elif frame.shape != shape:
            raise PeersError(f"{p}: frame is {frame.shape}, the sequence started at {shape}")
        t0 = time.perf_counter()
        flags.append(bool(peer.step(frame)))
        spent += time.perf_counter() - t0
    return score(labels, flags, round(spent * 1000 / len(paths), 4)), sum(flags) / len(flags)


# ---------------------------------------------------------------- bench


def bench_mog2(cv2, np, src, min_frames=200, dump=None, dump_frames=100):
    """Median MOG2 apply() time on 640x480 grey frames decoded from src (a
    video file, or a directory of images in name order, repeated as needed).
    With dump, the first dump_frames of those frames are also written there
    as PNG (000000.png ...), so keyframe's benchmark can time the very same
    frames."""
    frames = []
    if os.path.isdir(src):
        vids = sorted(n for n in os.listdir(src) if n.lower().endswith((".avi", ".mp4", ".mkv")))
        imgs = sorted(n for n in os.listdir(src) if n.lower().endswith(IMAGE_EXTS))
        if vids:
            src = os.path.join(src, vids[0])
        elif imgs:
            for n in imgs:
                frames.append(read_frame(cv2, os.path.join(src, n), True))
        else:
            raise PeersError(f"{src}: no video and no frames")
    if not frames:
        cap = cv2.VideoCapture(src)
        if not cap.isOpened():
            raise PeersError(f"{src}: OpenCV cannot open the video")
        while True:
            ok, img = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
        cap.release()
        if not frames:
            raise PeersError(f"{src}: no frame could be decoded")
    frames = [cv2.resize(f, (640, 480), interpolation=cv2.INTER_AREA) for f in frames]
    if dump is not None:
        os.makedirs(dump, exist_ok=True)
        for i, f in enumerate(frames[:dump_frames]):
            if not cv2.imwrite(os.path.join(dump, f"{i:06d}.png"), f):
                raise PeersError(f"{dump}: cannot write frame {i}")
    while len(frames) < min_frames:
        frames = frames + frames
    cv2.setNumThreads(1)
    sub = cv2.createBackgroundSubtractorMOG2()
    times = []
    for f in frames:
        t0 = time.perf_counter()
        sub.apply(f)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, len(frames)


# ---------------------------------------------------------------- output


def fmt(v, nd=2):
    return "-" if v is None else f"{v:.{nd}f}"


def print_table(peer, result, flagged, out):
    out.write(f"peer {peer}\n")
    out.write(
        f"{'sequence':36} {'P':>5} {'R':>5} {'F1':>5} {'evP':>5} {'evR':>5} "
        f"{'fe/1k':>6} {'frames':>6} {'pos':>5} {'neg':>5} {'events':>6} {'ms/f':>6} {'flagged%':>7}\n"
    )
    for name, s in result["sequences"].items():
        out.write(
            f"{name:36} {fmt(s['precision']):>5} {fmt(s['recall']):>5} {fmt(s['f1']):>5} "
            f"{fmt(s['event_precision']):>5} {fmt(s['event_recall']):>5} "
            f"{fmt(s['false_events_per_1000_quiet'], 1):>6} {s['frames']:>6} {s['positives']:>5} "
            f"{s['negatives']:>5} {s['events']:>6} {fmt(s['ms_per_frame'], 3):>6} {100 * flagged[name]:>7.0f}\n"
        )
    o = result["overall"]
    out.write(
        f"{'overall (sequences with positives)':36} {fmt(o['precision']):>5} {fmt(o['recall']):>5} "
        f"{fmt(o['f1']):>5} {fmt(o['event_precision']):>5} {fmt(o['event_recall']):>5} "
        f"{fmt(o['false_events_per_1000_quiet'], 1):>6}\n"
    )
    out.write(f"events on sequences without positives: {o['events_on_quiet_sequences']}\n")


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="peers.py",
        description="Score the Frigate-style and MOG2 peers like `keyframe eval`.",
    )
    ap.add_argument("--peer", choices=sorted(PEERS))
    ap.add_argument("--json", action="store_true", help="print the JSON of `keyframe eval --json`")
    ap.add_argument("--bench-mog2", metavar="VIDEO_OR_DIR", help="time MOG2 on 640x480 grey frames")
    ap.add_argument("--dump-frames", metavar="DIR", help="with --bench-mog2: also write the first 100 timed frames as PNG into DIR")
    ap.add_argument("dirs", nargs="*", metavar="DIR")
    a = ap.parse_args(argv)
    if a.bench_mog2 is None and (a.peer is None or not a.dirs):
        ap.error("want --peer and at least one DIR, or --bench-mog2")
    if a.bench_mog2 is not None and (a.peer or a.dirs):
        ap.error("--bench-mog2 takes no --peer and no DIR")
    if a.dump_frames is not None and a.bench_mog2 is None:
        ap.error("--dump-frames goes with --bench-mog2")

    def note(msg):
        print(msg, file=sys.stderr)

    try:
        import cv2
        import numpy as np
    except ImportError as e:
        note(f"peers: {e}: run scripts/peers/run.sh, which installs python3-opencv and python3-numpy")
        return 2

    try:
        if a.bench_mog2 is not None:
            ms, n = bench_mog2(cv2, np, a.bench_mog2, dump=a.dump_frames)
            note(f"peers: MOG2 on {n} frames at 640x480, OpenCV {cv2.__version__}, 1 thread: median apply() {ms:.3f} ms")
            print(json.dumps({"mog2_ms_per_frame_640x480": round(ms, 4)}))
            return 0
        seqs = expand(a.dirs, note)
        if not seqs:
            raise PeersError("no labelled sequence in " + " ".join(a.dirs))
        sequences, flagged = {}, {}
        for s in seqs:
            name = os.path.basename(os.path.normpath(s))
            if name in sequences:
                raise PeersError(f"{s}: a sequence named {name} was already scored")
            sequences[name], flagged[name] = run_peer(cv2, np, PEERS[a.peer], s)
        result = {"sequences": sequences, "overall": overall(sequences)}
    except (PeersError, OSError) as e:
        note(f"peers: {e}")
        return 1
    if a.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_table(a.peer, result, flagged, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
