"""Files on disk: atomic writes and strict JSON (:mod:`files`), signal handling around writes
(:mod:`signals`) and the one writer of run directories (:mod:`rundir`)."""
