"""The face stage: find faces in the photo, restore each aligned face, blend it by the fidelity and paste it back.

Parts, each in its own module: `detect` (YuNet, else OpenCV's Haar cascades: five landmarks per face),
`align` (the similarity to GFPGAN's 512x512 template, the crop and the feathered paste), `restorers`
(the Restorer protocol and GFPGAN through spandrel) and `stage` (the order of it all, with its report)."""
