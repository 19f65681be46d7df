;; echo_upper: an Extism plugin that returns its input with ASCII letters upper-cased.
;;
;; A byte-moving benchmark guest written against the plain Extism kernel ABI (no PDK): it
;; reads the whole input from kernel memory 8 bytes at a time (input_load_u64, the tail with
;; input_load_u8), upper-cases each word in registers (SWAR, below), writes an output block
;; of the same length (alloc + store_u64, tail store_u8) and hands it over with output_set.
;; Every byte crosses the ABI once in each direction, as a real plugin's input and output do.
;;
;; Export: `upper` () -> i32, returning 0. The result equals Python's `bytes.upper()`.

(module
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u64" (func $input_load_u64 (param i64) (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u64" (func $store_u64 (param i64 i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))

  (memory (export "memory") 1)

  ;; Upper-case the ASCII letters among the 8 bytes of $x. With l = x & 0x7f.. (no byte can
  ;; carry into the next when 0x1f or 0x05 is added), byte i of l + 0x1f.. has its top bit set
  ;; iff it is >= 'a' (0x61), of l + 0x05.. iff it is > 'z' (0x7a); bytes >= 0x80 in $x are
  ;; not ASCII and are left alone. A lower-case letter loses bit 0x20 (= 0x80 >> 2).
  (func $upper8 (param $x i64) (result i64)
    (local $l i64)
    (local $lower i64)
    (local.set $l (i64.and (local.get $x) (i64.const 0x7f7f7f7f7f7f7f7f)))
    (local.set $lower
      (i64.and
        (i64.and
          (i64.add (local.get $l) (i64.const 0x1f1f1f1f1f1f1f1f))
          (i64.xor (i64.add (local.get $l) (i64.const 0x0505050505050505)) (i64.const -1)))
        (i64.and
          (i64.xor (local.get $x) (i64.const -1))
          (i64.const 0x8080808080808080))))
    (i64.xor (local.get $x) (i64.shr_u (local.get $lower) (i64.const 2))))

  (func $upper1 (param $c i32) (result i32)
    (if (result i32)
      (i32.le_u (i32.sub (local.get $c) (i32.const 0x61)) (i32.const 25))
      (then (i32.xor (local.get $c) (i32.const 0x20)))
      (else (local.get $c))))

  (func (export "upper") (result i32)
    (local $n i64)
    (local $out i64)
    (local $i i64)
    (local $words i64)
    (local.set $n (call $input_length))
    (if (i64.eqz (local.get $n))
      (then (call $output_set (i64.const 0) (i64.const 0)) (return (i32.const 0))))
    (local.set $out (call $alloc (local.get $n)))
    (if (i64.eqz (local.get $out)) (then (return (i32.const 1))))
    (local.set $words (i64.and (local.get $n) (i64.const -8)))
    (block $done
      (loop $word
        (br_if $done (i64.ge_u (local.get $i) (local.get $words)))
        (call $store_u64
          (i64.add (local.get $out) (local.get $i))
          (call $upper8 (call $input_load_u64 (local.get $i))))
        (local.set $i (i64.add (local.get $i) (i64.const 8)))
        (br $word)))
    (block $tail_done
      (loop $tail
        (br_if $tail_done (i64.ge_u (local.get $i) (local.get $n)))
        (call $store_u8
          (i64.add (local.get $out) (local.get $i))
          (call $upper1 (call $input_load_u8 (local.get $i))))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $tail)))
    (call $output_set (local.get $out) (local.get $n))
    (i32.const 0)))
