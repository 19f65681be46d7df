;; wasmlet's Extism kernel: owns the "kernel memory" that plugins reach through the functions
;; of the `extism:host/env` import namespace (docs: /work/shared/EXTISM-ABI.md section 1).
;;
;; Every value crossing the ABI is an i64 (u64) even though the memory is 32-bit; each
;; function range-checks its arguments so that no input, however bogus, makes it trap.
;;
;; Memory layout
;;
;;   [0, 16)            reserved: handle 0 means "none", and stray writes through a null
;;                      handle land here instead of in the first block's header
;;   [16, $bump)        blocks, one after another, each 8-aligned:
;;                        header (24 bytes) | data (cap bytes, cap = length rounded up to 8)
;;   [$bump, size)      unused; alloc grows the memory by whole pages when this is too small
;;
;; Block header, at h - 24 for the block with handle h (the address of its first data byte):
;;
;;   +0   u32  status   LIVE or FREE (any other value: not a header)
;;   +4   u32  gen      value of $gen when the block was made; reset bumps $gen, which
;;                      invalidates every older header at once, even those left in memory
;;   +8   u32  self     h itself: a header is only believed at the address it names
;;   +12  u32  cap      usable bytes after the header (multiple of 8)
;;   +16  u64  len      the length asked of alloc, which `length` reports
;;
;; A handle is valid when it lies inside [16, $bump), is 8-aligned and its header has status
;; LIVE, the current gen, self = h and h + len <= $bump: O(1), and never a wild read. A plugin
;; can forge a header inside its own data (it can write anywhere); that only fools the plugin.
;;
;; Allocation is a bump pointer. `free` marks a block FREE; freed blocks are reused (first fit,
;; splitting off the rest when big enough) only when the memory would otherwise have to grow,
;; so a handle freed twice in a row (PDKs do that) does not hit a fresh block. `reset` drops
;; every block by rewinding the bump pointer and bumping $gen.

(module
  (memory (export "memory") 1)

  (global $BASE i64 (i64.const 16))   ;; start of the block area
  (global $HDR i64 (i64.const 24))    ;; header size
  (global $LIVE i32 (i32.const 0x4556494c))  ;; "LIVE" in little-endian ASCII
  (global $FREE i32 (i32.const 0x45455246))  ;; "FREE"
  (global $SPLIT i64 (i64.const 64))  ;; split a reused block if >= HDR + this would remain

  (global $bump (mut i64) (i64.const 16))     ;; end of the block area
  (global $gen (mut i32) (i32.const 1))       ;; reset epoch stamped into headers
  (global $free_bytes (mut i64) (i64.const 0))  ;; sum of cap over FREE blocks
  (global $in_off (mut i64) (i64.const 0))
  (global $in_len (mut i64) (i64.const 0))
  (global $out_off (mut i64) (i64.const 0))
  (global $out_len (mut i64) (i64.const 0))
  (global $err (mut i64) (i64.const 0))

  ;; ---- helpers ---------------------------------------------------------------------------

  ;; Current memory size in bytes.
  (func $size (result i64)
    (i64.shl (i64.extend_i32_u (memory.size)) (i64.const 16)))

  ;; Is [a, a + n) inside the memory? (unsigned, no overflow)
  (func $in_memory (param $a i64) (param $n i64) (result i32)
    (if (i64.gt_u (local.get $n) (call $size)) (then (return (i32.const 0))))
    (i64.le_u (local.get $a) (i64.sub (call $size) (local.get $n))))

  ;; Address of the header of handle h (only meaningful once h is known to be in the block area).
  (func $hdr (param $h i64) (result i32)
    (i32.wrap_i64 (i64.sub (local.get $h) (global.get $HDR))))

  ;; Write a complete header for a block with handle h.
  (func $put_header (param $h i64) (param $status i32) (param $cap i64) (param $len i64)
    (local $p i32)
    (local.set $p (call $hdr (local.get $h)))
    (i32.store offset=0 (local.get $p) (local.get $status))
    (i32.store offset=4 (local.get $p) (global.get $gen))
    (i32.store offset=8 (local.get $p) (i32.wrap_i64 (local.get $h)))
    (i32.store offset=12 (local.get $p) (i32.wrap_i64 (local.get $cap)))
    (i64.store offset=16 (local.get $p) (local.get $len)))

  ;; Does h start a block of the current generation with the given status? Checks the
  ;; position first, so the header is read only when it lies inside the block area.
  (func $is_block (param $h i64) (param $status i32) (result i32)
    (local $p i32)
    (if (i64.lt_u (local.get $h) (i64.add (global.get $BASE) (global.get $HDR)))
      (then (return (i32.const 0))))
    (if (i64.ge_u (local.get $h) (global.get $bump)) (then (return (i32.const 0))))
    (if (i32.wrap_i64 (i64.and (local.get $h) (i64.const 7))) (then (return (i32.const 0))))
    (local.set $p (call $hdr (local.get $h)))
    (if (i32.ne (i32.load offset=0 (local.get $p)) (local.get $status))
      (then (return (i32.const 0))))
    (if (i32.ne (i32.load offset=4 (local.get $p)) (global.get $gen))
      (then (return (i32.const 0))))
    (if (i32.ne (i32.load offset=8 (local.get $p)) (i32.wrap_i64 (local.get $h)))
      (then (return (i32.const 0))))
    ;; the data must fit below the bump pointer (h < $bump here, so no underflow)
    (i64.le_u (i64.load offset=16 (local.get $p)) (i64.sub (global.get $bump) (local.get $h))))

  ;; First fit among FREE blocks for cap bytes; marks the block LIVE with length n.
  ;; Returns its handle, or 0. Stops at the first header that does not make sense.
  (func $reuse (param $cap i64) (param $n i64) (result i64)
    (local $h i64) (local $c i64) (local $p i32) (local $status i32) (local $rest i64)
    (local.set $h (i64.add (global.get $BASE) (global.get $HDR)))
    (block $done
      (loop $next
        (br_if $done (i64.ge_u (local.get $h) (global.get $bump)))
        (br_if $done (i32.eqz (i32.or (call $is_block (local.get $h) (global.get $LIVE))
                                      (call $is_block (local.get $h) (global.get $FREE)))))
        (local.set $p (call $hdr (local.get $h)))
        (local.set $status (i32.load offset=0 (local.get $p)))
        (local.set $c (i64.extend_i32_u (i32.load offset=12 (local.get $p))))
        (br_if $done (i64.gt_u (local.get $c) (i64.sub (global.get $bump) (local.get $h))))
        (if (i32.and (i32.eq (local.get $status) (global.get $FREE))
                     (i64.ge_u (local.get $c) (local.get $cap)))
          (then
            (local.set $rest (i64.sub (local.get $c) (local.get $cap)))
            (if (i64.ge_u (local.get $rest) (i64.add (global.get $HDR) (global.get $SPLIT)))
              (then
                ;; keep cap bytes, turn the remainder into a FREE block of its own
                (call $put_header
                  (i64.add (i64.add (local.get $h) (local.get $cap)) (global.get $HDR))
                  (global.get $FREE)
                  (i64.sub (local.get $rest) (global.get $HDR))
                  (i64.const 0))
                (local.set $c (local.get $cap))
                (global.set $free_bytes (i64.sub (global.get $free_bytes) (global.get $HDR)))))
            (global.set $free_bytes (i64.sub (global.get $free_bytes) (local.get $c)))
            (call $put_header (local.get $h) (global.get $LIVE) (local.get $c) (local.get $n))
            (return (local.get $h))))
        ;; the next header follows this block's data
        (local.set $h (i64.add (i64.add (local.get $h) (local.get $c)) (global.get $HDR)))
        (br $next)))
    (i64.const 0))

  ;; ---- allocation ------------------------------------------------------------------------

  (func $alloc (export "alloc") (param $n i64) (result i64)
    (local $cap i64) (local $end i64) (local $h i64)
    ;; nothing for 0 bytes, nor for more than a 32-bit memory could ever hold
    (if (i64.eqz (local.get $n)) (then (return (i64.const 0))))
    (if (i64.gt_u (local.get $n) (i64.const 0xffffffff)) (then (return (i64.const 0))))
    (local.set $cap (i64.and (i64.add (local.get $n) (i64.const 7)) (i64.const -8)))
    (local.set $end (i64.add (i64.add (global.get $bump) (global.get $HDR)) (local.get $cap)))
    (if (i64.gt_u (local.get $end) (call $size))
      (then
        ;; out of room: first try a freed block, then grow by whole pages
        (if (i64.ge_u (global.get $free_bytes) (local.get $cap))
          (then
            (local.set $h (call $reuse (local.get $cap) (local.get $n)))
            (if (i64.ne (local.get $h) (i64.const 0)) (then (return (local.get $h))))))
        (if (i64.gt_u (local.get $end) (i64.const 0x100000000)) (then (return (i64.const 0))))
        (if (i32.eq
              (memory.grow (i32.wrap_i64
                (i64.shr_u (i64.add (i64.sub (local.get $end) (call $size)) (i64.const 0xffff))
                           (i64.const 16))))
              (i32.const -1))
          (then (return (i64.const 0))))))
    (local.set $h (i64.add (global.get $bump) (global.get $HDR)))
    (call $put_header (local.get $h) (global.get $LIVE) (local.get $cap) (local.get $n))
    (global.set $bump (local.get $end))
    (local.get $h))

  (func (export "free") (param $h i64)
    (if (i32.and (i64.ne (local.get $h) (i64.const 0))
                 (i64.eq (local.get $h) (global.get $in_off)))
      (then
        (global.set $in_off (i64.const 0))
        (global.set $in_len (i64.const 0))))
    (if (call $is_block (local.get $h) (global.get $LIVE))
      (then
        (i32.store offset=0 (call $hdr (local.get $h)) (global.get $FREE))
        (global.set $free_bytes
          (i64.add (global.get $free_bytes)
                   (i64.extend_i32_u (i32.load offset=12 (call $hdr (local.get $h)))))))))

  ;; Validated, O(1); also exported as `length_unsafe` (same answer, 0 for any non-handle).
  (func $length (export "length") (export "length_unsafe") (param $h i64) (result i64)
    (if (result i64) (call $is_block (local.get $h) (global.get $LIVE))
      (then (i64.load offset=16 (call $hdr (local.get $h))))
      (else (i64.const 0))))

  (func $reset (export "reset")
    (global.set $gen (i32.add (global.get $gen) (i32.const 1)))
    (global.set $bump (global.get $BASE))
    (global.set $free_bytes (i64.const 0))
    (global.set $in_off (i64.const 0))
    (global.set $in_len (i64.const 0))
    (global.set $out_off (i64.const 0))
    (global.set $out_len (i64.const 0))
    (global.set $err (i64.const 0)))

  (func (export "memory_bytes") (result i64)
    (i64.sub (global.get $bump) (global.get $BASE)))

  ;; ---- raw access: out of memory reads 0, writes are dropped -----------------------------

  (func (export "load_u8") (param $a i64) (result i32)
    (if (result i32) (call $in_memory (local.get $a) (i64.const 1))
      (then (i32.load8_u (i32.wrap_i64 (local.get $a))))
      (else (i32.const 0))))

  (func (export "load_u64") (param $a i64) (result i64)
    (if (result i64) (call $in_memory (local.get $a) (i64.const 8))
      (then (i64.load (i32.wrap_i64 (local.get $a))))
      (else (i64.const 0))))

  (func (export "store_u8") (param $a i64) (param $v i32)
    (if (call $in_memory (local.get $a) (i64.const 1))
      (then (i32.store8 (i32.wrap_i64 (local.get $a)) (local.get $v)))))

  (func (export "store_u64") (param $a i64) (param $v i64)
    (if (call $in_memory (local.get $a) (i64.const 8))
      (then (i64.store (i32.wrap_i64 (local.get $a)) (local.get $v)))))

  ;; ---- input: [in_off, in_off + in_len), always inside the memory ------------------------

  (func $input_set (export "input_set") (param $h i64) (param $len i64)
    (if (call $in_memory (local.get $h) (local.get $len))
      (then
        (global.set $in_off
          (select (local.get $h) (i64.const 0) (i64.ne (local.get $len) (i64.const 0))))
        (global.set $in_len (local.get $len)))))

  (func (export "input_length") (result i64) (global.get $in_len))
  (func (export "input_offset") (result i64) (global.get $in_off))

  (func (export "input_load_u8") (param $i i64) (result i32)
    (if (result i32) (i64.lt_u (local.get $i) (global.get $in_len))
      (then (i32.load8_u (i32.wrap_i64 (i64.add (global.get $in_off) (local.get $i)))))
      (else (i32.const 0))))

  (func (export "input_load_u64") (param $i i64) (result i64)
    (if (result i64)
        (i32.and (i64.ge_u (global.get $in_len) (i64.const 8))
                 (i64.le_u (local.get $i) (i64.sub (global.get $in_len) (i64.const 8))))
      (then (i64.load (i32.wrap_i64 (i64.add (global.get $in_off) (local.get $i)))))
      (else (i64.const 0))))

  ;; ---- output and error ------------------------------------------------------------------

  ;; A range outside the memory is ignored (the previous output stays); length 0 = no output.
  (func (export "output_set") (param $h i64) (param $len i64)
    (if (call $in_memory (local.get $h) (local.get $len))
      (then
        (global.set $out_off
          (select (local.get $h) (i64.const 0) (i64.ne (local.get $len) (i64.const 0))))
        (global.set $out_len (local.get $len)))))

  (func (export "output_length") (result i64) (global.get $out_len))
  (func (export "output_offset") (result i64) (global.get $out_off))

  ;; Any value is kept; the host validates it with `length` when it reads the message.
  (func (export "error_set") (param $h i64) (global.set $err (local.get $h)))
  (func (export "error_get") (result i64) (global.get $err))
;; ---- host-only entry points: one wasm call each at the start and end of a plugin call --
  ;; (not part of the plugin ABI; the plugin never imports them)

  ;; reset + alloc(n) + input_set: returns the input block to copy n bytes into (0 if n = 0
  ;; or the memory cannot hold it).
  (func (export "wasmlet_begin") (param $n i64) (result i64)
    (local $h i64)
    (call $reset)
    (if (i64.eqz (local.get $n)) (then (return (i64.const 0))))
    (local.set $h (call $alloc (local.get $n)))
    (if (i64.ne (local.get $h) (i64.const 0))
      (then (call $input_set (local.get $h) (local.get $n))))
    (local.get $h))

  ;; output offset, output length, error handle and the error's length.
  (func (export "wasmlet_end") (result i64 i64 i64 i64)
    (global.get $out_off)
    (global.get $out_len)
    (global.get $err)
    (call $length (global.get $err)))
)
