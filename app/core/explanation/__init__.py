"""Why a network decided: CAM family, occlusion, deletion/insertion faithfulness."""
