package vibration

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/splitpoint/splitpoint/tasks"
	"gonum.org/v1/gonum/dsp/fourier"
)

// Floating point (see the package doc): every product that feeds an
// addition is written float64(x*y), so that no compiler fuses it into a
// multiply-add and every architecture rounds the same way.

const axes = 3

// biquad is one second-order section, normalised so that a0 = 1, run in
// transposed direct form II.
type biquad struct{ b0, b1, b2, a1, a2 float64 }

// butterworth2 designs a 2nd-order Butterworth low-pass (highPass false)
// or high-pass section with its -3 dB point at f0 Hz, by the bilinear
// transform with prewarping (Robert Bristow-Johnson's cookbook with
// Q = 1/√2). Its magnitude at f Hz is exactly
// 1/√(1+(tan(πf/fs)/tan(πf0/fs))⁴) for the low-pass and
// 1/√(1+(tan(πf0/fs)/tan(πf/fs))⁴) for the high-pass.
func butterworth2(f0, fs float64, highPass bool) biquad {
	w0 := 2 * math.Pi * f0 / fs
	cw, sw := math.Cos(w0), math.Sin(w0)
	alpha := sw / (2 / math.Sqrt2) // sin(w0)/(2Q), Q = 1/√2
	a0 := 1 + alpha
	var q biquad
	if highPass {
		q.b0 = (1 + cw) / 2 / a0
		q.b1 = -(1 + cw) / a0
	} else {
		q.b0 = (1 - cw) / 2 / a0
		q.b1 = (1 - cw) / a0
	}
	q.b2 = q.b0
	q.a1 = -2 * cw / a0
	q.a2 = (1 - alpha) / a0
	return q
}

// run filters x in place, starting from the state the section would be in
// had its input been x[0] forever (scipy's lfilter_zi), so that an offset
// such as gravity does not ring at the start of the window.
func (q biquad) run(x []float64) {
	if len(x) == 0 {
		return
	}
	g := (q.b0 + q.b1 + q.b2) / (1 + q.a1 + q.a2) // DC gain
	y0 := float64(g * x[0])
	z1 := y0 - float64(q.b0*x[0])
	z2 := float64(q.b2*x[0]) - float64(q.a2*y0)
	for i, v := range x {
		y := float64(q.b0*v) + z1
		z1 = float64(q.b1*v) - float64(q.a1*y) + z2
		z2 = float64(q.b2*v) - float64(q.a2*y)
		x[i] = y
	}
}

// bandPass filters each axis of sig ([n 3], row-major) with a high-pass at
// low Hz followed by a low-pass at high Hz (each 2nd-order Butterworth, so
// 12 dB/octave on each side) and returns the result in a new slice.
func bandPass(sig []float64, low, high, fs float64) []float64 {
	n := len(sig) / axes
	hp, lp := butterworth2(low, fs, true), butterworth2(high, fs, false)
	out := make([]float64, len(sig))
	col := make([]float64, n)
	for a := 0; a < axes; a++ {
		for i := range col {
			col[i] = sig[i*axes+a]
		}
		hp.run(col)
		lp.run(col)
		for i, v := range col {
			out[i*axes+a] = v
		}
	}
	return out
}

// moments returns, per axis of sig ([n 3]), the RMS √(Σx²/n) and the
// (Pearson, non-excess) kurtosis m4/m2² of the central moments: 1.5 for a
// sine, 3 for Gaussian noise, larger for impulsive signals; 0 for an axis
// that is constant.
func moments(sig []float64) (rms, kurt [axes]float64) {
	n := len(sig) / axes
	for a := 0; a < axes; a++ {
		var sum, sq float64
		for i := 0; i < n; i++ {
			v := sig[i*axes+a]
			sum += v
			sq += float64(v * v)
		}
		mean := sum / float64(n)
		var m2, m4 float64
		for i := 0; i < n; i++ {
			d := sig[i*axes+a] - mean
			d2 := float64(d * d)
			m2 += d2
			m4 += float64(d2 * d2)
		}
		m2 /= float64(n)
		m4 /= float64(n)
		rms[a] = math.Sqrt(sq / float64(n))
		if m2 > 0 {
			kurt[a] = m4 / float64(m2*m2)
		}
	}
	return rms, kurt
}

// hann returns the periodic Hann window of length n, w[i] = ½ − ½cos(2πi/n),
// with Σw and Σw².
func hann(n int) (w []float64, sum, sumSq float64) {
	w = make([]float64, n)
	for i := range w {
		w[i] = 0.5 - float64(0.5*math.Cos(2*math.Pi*float64(i)/float64(n)))
		sum += w[i]
		sumSq += float64(w[i] * w[i])
	}
	return w, sum, sumSq
}

// spectrumBins is the number of one-sided spectrum bins of an n-sample
// window: n/2+1.
func spectrumBins(n int) int { return n/2 + 1 }

// isEdgeBin reports whether bin k of an n-point one-sided spectrum is DC or
// (n even) Nyquist, the bins that have no negative-frequency twin.
func isEdgeBin(k, n int) bool { return k == 0 || (n%2 == 0 && k == n/2) }

// amplitudeSpectrum returns, per axis of sig ([n 3]), the one-sided
// amplitude spectrum of the Hann-windowed signal, [n/2+1 3] rounded to
// float32: bin k is at k·fs/n Hz, and a sine of amplitude A m/s² centred
// on a bin reads A there (coherent gain corrected: |X_k|·2/Σw, DC and
// Nyquist |X_k|/Σw). The transform is gonum's FFT.
func amplitudeSpectrum(sig []float64) []float32 {
	n := len(sig) / axes
	m := spectrumBins(n)
	w, sum, _ := hann(n)
	fft := fourier.NewFFT(n)
	seq := make([]float64, n)
	coef := make([]complex128, m)
	out := make([]float32, m*axes)
	for a := 0; a < axes; a++ {
		for i := range seq {
			seq[i] = float64(sig[i*axes+a] * w[i])
		}
		fft.Coefficients(coef, seq)
		for k, c := range coef {
			re, im := real(c), imag(c)
			mag := math.Sqrt(float64(re*re) + float64(im*im))
			scale := 2 / sum
			if isEdgeBin(k, n) {
				scale = 1 / sum
			}
			out[k*axes+a] = float32(float64(mag * scale))
		}
	}
	return out
}

// enbw is the equivalent noise bandwidth, in bins, of the n-point Hann
// window: n·Σw²/(Σw)² (1.5 for n ≥ 3).
func enbw(n int) float64 {
	_, sum, sumSq := hann(n)
	return float64(float64(n)*sumSq) / float64(sum*sum)
}

// binPower converts bin k's amplitude (as amplitudeSpectrum writes it) to
// mean-square power in (m/s²)²: amp²/(2·enbw), or amp²/enbw for DC and
// Nyquist. Summed over all bins it estimates the signal's mean square
// (Parseval); a bin-centred sine of amplitude A gives A²/2 over its bins.
func binPower(amp float32, k, n int, bw float64) float64 {
	a := float64(amp)
	p := float64(a * a)
	if isEdgeBin(k, n) {
		return p / bw
	}
	return p / float64(2*bw)
}

// binHz is the frequency of bin k of an n-point spectrum at fs Hz.
func binHz(k, n int, fs float64) float64 {
	return float64(float64(k)*fs) / float64(n)
}

// bandEnergies returns the energy of each band per axis, [len(bands) 3]
// row-major, in (m/s²)²: the sum of binPower over the bins k with
// low ≤ k·fs/n < high. spec is [n/2+1 3].
func bandEnergies(spec []float32, n int, fs float64, bands [][2]float64) []float64 {
	m := spectrumBins(n)
	bw := enbw(n)
	out := make([]float64, len(bands)*axes)
	for b, band := range bands {
		for k := 0; k < m; k++ {
			f := binHz(k, n, fs)
			if f < band[0] || f >= band[1] {
				continue
			}
			for a := 0; a < axes; a++ {
				out[b*axes+a] += binPower(spec[k*axes+a], k, n, bw)
			}
		}
	}
	return out
}

// peakHz returns per axis the frequency of the largest spectrum bin above
// DC (the first of equal ones), or 0 for an axis whose spectrum above DC
// is all zero.
func peakHz(spec []float32, n int, fs float64) [axes]float64 {
	var out [axes]float64
	m := spectrumBins(n)
	for a := 0; a < axes; a++ {
		best, amp := 0, float32(0)
		for k := 1; k < m; k++ {
			if v := spec[k*axes+a]; v > amp {
				best, amp = k, v
			}
		}
		out[a] = binHz(best, n, fs)
	}
	return out
}

// bandBins counts the spectrum bins of an n-point window at fs Hz that a
// band [low, high) holds.
func bandBins(band [2]float64, n int, fs float64) int {
	c := 0
	for k := 0; k < spectrumBins(n); k++ {
		if f := binHz(k, n, fs); f >= band[0] && f < band[1] {
			c++
		}
	}
	return c
}

// Array helpers: the state's arrays are little-endian, row-major.

func float64Array(v []float64, shape ...int) tasks.Array {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
	}
	return tasks.Array{DType: tasks.Float64, Shape: shape, Data: b}
}

func float32Array(v []float32, shape ...int) tasks.Array {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return tasks.Array{DType: tasks.Float32, Shape: shape, Data: b}
}

// getArray reads the named array and checks its type and shape (a -1 in
// shape matches any length ≥ 1).
func getArray(s *tasks.State, name string, dtype tasks.DType, shape ...int) (tasks.Array, error) {
	a, ok, err := s.Array(name)
	if err != nil {
		return tasks.Array{}, fmt.Errorf("%s: %w", name, err)
	}
	if !ok {
		return tasks.Array{}, fmt.Errorf("no array %s", name)
	}
	if err := a.Validate(); err != nil {
		return tasks.Array{}, fmt.Errorf("%s: %w", name, err)
	}
	bad := a.DType != dtype || len(a.Shape) != len(shape)
	for i := 0; !bad && i < len(shape); i++ {
		bad = shape[i] >= 0 && a.Shape[i] != shape[i]
	}
	if bad {
		return tasks.Array{}, fmt.Errorf("%s is a %s array of shape %v, want %s %v", name, a.DType, a.Shape, dtype, shape)
	}
	return a, nil
}

func getFloat64s(s *tasks.State, name string, shape ...int) ([]float64, error) {
	a, err := getArray(s, name, tasks.Float64, shape...)
	if err != nil {
		return nil, err
	}
	out := make([]float64, a.Elements())
	for i := range out {
		out[i] = math.Float64frombits(binary.LittleEndian.Uint64(a.Data[8*i:]))
	}
	return out, nil
}

func getFloat32s(s *tasks.State, name string, shape ...int) ([]float32, error) {
	a, err := getArray(s, name, tasks.Float32, shape...)
	if err != nil {
		return nil, err
	}
	out := make([]float32, a.Elements())
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(a.Data[4*i:]))
	}
	return out, nil
}
