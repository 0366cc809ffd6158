#!/usr/bin/env python3
"""Tests of the peers' scoring and data loading (no OpenCV needed).

    python3 -m unittest discover -s scripts/peers -p 'test_*.py'
"""

import os
import tempfile
import unittest

import peers


class GroupEvents(unittest.TestCase):
    def test_gap(self):
        # 10 frames between 0 and 11: one event; 11 frames between 11 and 23: two.
        self.assertEqual(peers.group_events([0, 11, 23]), [(0, 11), (23, 23)])
        self.assertEqual(peers.group_events([]), [])
        self.assertEqual(peers.group_events([3, 4, 5], gap=0), [(3, 5)])
        self.assertEqual(peers.group_events([3, 5], gap=0), [(3, 3), (5, 5)])


class Score(unittest.TestCase):
    def test_frames_and_events(self):
        # 0..29 quiet, 30..39 motion, 40..79 quiet, 80..84 don't care.
        labels = [0] * 30 + [1] * 10 + [0] * 40 + [-1] * 5
        flags = [False] * len(labels)
        for i in list(range(5, 7)) + list(range(32, 45)) + list(range(81, 83)):
            flags[i] = True
        r = peers.score(labels, flags, 1.5)
        tp, fp, fn = 8, 2 + 5, 2  # 32..39 hit; 5,6 and 40..44 false; 30,31 missed
        self.assertAlmostEqual(r["precision"], tp / (tp + fp))
        self.assertAlmostEqual(r["recall"], tp / (tp + fn))
        p, rec = tp / (tp + fp), tp / (tp + fn)
        self.assertAlmostEqual(r["f1"], 2 * p * rec / (p + rec))
        # Predicted events: 5..6, 32..44, 81..82 (don't care only, still counted).
        self.assertEqual(r["events"], 3)
        self.assertAlmostEqual(r["event_precision"], 1 / 3)
        self.assertAlmostEqual(r["event_recall"], 1.0)
        # Frame 0 is not scored: 69 quiet frames.
        self.assertAlmostEqual(r["false_events_per_1000_quiet"], 2 * 1000 / 69)
        self.assertEqual((r["frames"], r["positives"], r["negatives"]), (85, 10, 69))
        self.assertEqual(r["ms_per_frame"], 1.5)

    def test_truth_events_merge_across_gap(self):
        # Two runs 10 frames apart are one ground-truth event: catching one
        # run finds the whole event.
        labels = [0] * 5 + [1] * 3 + [0] * 10 + [1] * 3 + [0] * 5
        flags = [i in (5, 6) for i in range(len(labels))]
        r = peers.score(labels, flags)
        self.assertEqual(r["event_recall"], 1.0)
        labels[7] = 0  # now 11 frames apart: two events, one found
        r = peers.score(labels, flags)
        self.assertEqual(r["event_recall"], 0.5)

    def test_first_frame_dont_care(self):
        # The first frame is never scored: a ground-truth event of frame 0
        # alone is no event, and a flag on it is neither right nor wrong.
        labels = [1, 0, 0, 0, 0, 1, 1, 1, 1]
        flags = [True, False, False, False, False, True, True, True, True]
        r = peers.score(labels, flags)
        self.assertEqual((r["positives"], r["negatives"]), (4, 4))
        self.assertEqual((r["precision"], r["recall"], r["event_recall"]), (1.0, 1.0, 1.0))
        # The flag on frame 0 still joins the predicted event (events
        # group flagged frames of any label).
        self.assertEqual(r["events"], 1)
        r = peers.score([0, 0, 1, 1], [True, False, True, True])
        self.assertEqual(r["precision"], 1.0)

    def test_no_positives(self):
        labels = [0] * 50
        flags = [i in (10, 40) for i in range(50)]
        r = peers.score(labels, flags)
        for k in ("precision", "recall", "f1", "event_precision", "event_recall"):
            self.assertIsNone(r[k], k)
        self.assertEqual(r["events"], 2)
        self.assertAlmostEqual(r["false_events_per_1000_quiet"], 2 * 1000 / 49)  # frame 0 is not scored

    def test_nothing_flagged(self):
        labels = [0] * 5 + [1] * 5
        r = peers.score(labels, [False] * 10)
        self.assertIsNone(r["precision"])
        self.assertEqual(r["recall"], 0.0)
        self.assertEqual(r["f1"], 0.0)
        self.assertIsNone(r["event_precision"])
        self.assertEqual(r["event_recall"], 0.0)
        self.assertEqual(r["false_events_per_1000_quiet"], 0.0)

    def test_length_mismatch(self):
        with self.assertRaises(ValueError):
            peers.score([0, 1], [True])

    def test_overall(self):
        a = peers.score([0] * 5 + [1] * 5, [False] * 5 + [True] * 5)
        b = peers.score([0] * 6 + [1] * 5, [True] * 11)  # frame 0 not scored: 5 tp, 5 fp
        q = peers.score([0] * 20, [i == 3 for i in range(20)])
        o = peers.overall({"a": a, "b": b, "q": q})
        self.assertAlmostEqual(o["f1"], (a["f1"] + b["f1"]) / 2)
        self.assertAlmostEqual(o["precision"], (1.0 + 0.5) / 2)
        self.assertEqual(o["events_on_quiet_sequences"], 1)
        self.assertEqual(set(o), set(peers.METRICS) | {"events_on_quiet_sequences"})


class Data(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def seq(self, name, files, rows):
        d = os.path.join(self.root, name)
        os.makedirs(os.path.join(d, "input"))
        for f in files:
            open(os.path.join(d, "input", f), "wb").close()
        if rows is not None:
            with open(os.path.join(d, "frame_labels.csv"), "w") as f:
                f.write("pos,file,fg,unk,label,rule\n")
                for i, (fn, lab) in enumerate(rows):
                    f.write(f"{i},{fn},0,0,{lab},x\n")
        return d

    def test_expand_and_load(self):
        self.seq("b", ["f2.png", "f1.png", "notes.txt"], [("f1.png", 0), ("f2.png", 1)])
        self.seq("a", ["x.bmp"], [("x.bmp", -1)])
        os.makedirs(os.path.join(self.root, "video"))
        notes = []
        seqs = peers.expand([self.root], notes.append)
        self.assertEqual([os.path.basename(s) for s in seqs], ["a", "b"])
        self.assertEqual(len(notes), 1)
        self.assertIn("video", notes[0])
        paths, labels = peers.load_sequence(seqs[1])
        self.assertEqual([os.path.basename(p) for p in paths], ["f1.png", "f2.png"])
        self.assertEqual(labels, [0, 1])
        # A sequence directory given directly is not expanded.
        self.assertEqual(peers.expand([seqs[0]], notes.append), [seqs[0]])

    def test_bad_labels(self):
        cases = {
            "unlabelled": (["a.png", "b.png"], [("a.png", 0)]),
            "extra": (["a.png"], [("a.png", 0), ("b.png", 1)]),
            "value": (["a.png"], [("a.png", 2)]),
            "text": (["a.png"], [("a.png", "yes")]),
            "twice": (["a.png"], [("a.png", 0), ("a.png", 1)]),
        }
        for name, (files, rows) in cases.items():
            d = self.seq(name, files, rows)
            with self.assertRaises(peers.PeersError, msg=name):
                peers.load_sequence(d)

    def test_not_a_directory(self):
        with self.assertRaises(peers.PeersError):
            peers.expand([os.path.join(self.root, "missing")], print)


if __name__ == "__main__":
    unittest.main()
