package oscore

import "testing"

func TestWindow(t *testing.T) {
	type step struct {
		seq    uint64
		accept bool
	}
	tests := []struct {
		name  string
		size  int
		steps []step
	}{
		{"first zero then duplicate", 32, []step{{0, true}, {0, false}, {1, true}}},
		{"out of order inside window", 32, []step{{5, true}, {3, true}, {4, true}, {3, false}, {5, false}, {0, true}}},
		{"too old falls out of window", 32, []step{{40, true}, {9, true}, {8, false}, {41, true}, {9, false}}},
		{"large jump clears the window", 32, []step{{1, true}, {1000, true}, {968, false}, {969, true}, {1, false}}},
		{"window of one accepts only newer", 1, []step{{3, true}, {2, false}, {3, false}, {4, true}}},
		{"multiword window", 100, []step{{200, true}, {101, true}, {100, false}, {150, true}, {265, true}, {150, false}, {166, true}, {165, false}}},
		{"shift by exactly 64", 128, []step{{0, true}, {64, true}, {0, false}, {128, true}, {0, false}, {1, true}, {64, false}}},
		{"shift by 65 across words", 128, []step{{10, true}, {75, true}, {10, false}, {11, true}, {140, true}, {11, false}, {12, false}, {13, true}}},
		{"top of the range", 32, []step{{MaxSeq, true}, {MaxSeq, false}, {MaxSeq - 1, true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWindow(tt.size)
			for i, s := range tt.steps {
				ok := w.fresh(s.seq)
				if ok != s.accept {
					t.Fatalf("step %d: fresh(%d) = %v, want %v", i, s.seq, ok, s.accept)
				}
				if ok {
					w.accept(s.seq)
				}
			}
		})
	}
}

// A reference model: every accepted number is remembered; a number is fresh
// when never accepted and within size of the highest.
func TestWindowMatchesModel(t *testing.T) {
	for _, size := range []int{1, 32, 63, 64, 65, 200} {
		w := newWindow(size)
		seen := map[uint64]bool{}
		var top uint64
		var any bool
		x := uint64(12345)
		for range 5000 {
			x = x*6364136223846793005 + 1442695040888963407
			seq := top + (x>>33)%uint64(3*size/2+3)
			if seq >= uint64(size) {
				seq -= uint64(size)
			}
			want := !seen[seq] && (!any || seq > top || top-seq < uint64(size))
			if got := w.fresh(seq); got != want {
				t.Fatalf("size %d: fresh(%d) = %v, want %v (top %d)", size, seq, got, want, top)
			}
			if want {
				w.accept(seq)
				seen[seq] = true
				if !any || seq > top {
					top = seq
				}
				any = true
			}
		}
	}
}
