"""The paper's T-CoT generation prompts (Embed-RL, arXiv 2602.13823), verbatim.

Source: ZoengHN/Embed-RL @87b52f7, train/reinforcement_learning/verl/verl/utils/dataset/vlm2vec_dataset.py
(module-level constants; its data pipeline uses the same names). They are `str.format` templates:
`{{`/`}}` are literal braces, and the fields are `question`, `video`, `pos_text`,
`pos_image_description` and `pos_video_output`. How `embedrl.models.prompts` fills them and which
role and modality gets which: see its `EMBED_RL` prompt set. Kept apart because they are long.
"""

PROMPT_TEXT_WITHOUT_ANSWER = (
    'You are a visual reasoning assistant specialized in text-to-image retrieval. Given a text description and a task, analyze the text content to determine the key visual concepts needed for retrieving matching images.\n'
    '\n'
    '**Rules:**\n'
    '1.  Keep reasoning concise and grounded in textual evidence. Limit each step to 1-2 sentences.\n'
    '2.  Base your reasoning solely on the textual content and the task description.\n'
    '3.  Rephrase the final answer to preserve its exact meaning, changing only wording/phrasing if needed.\n'
    "4.  In your thinking process, you must extract and output key visual concepts from the text description. Use JSON format with key 'text_keywords' to specify the important keywords as a list.\n"
    "5.  First, think between `<thinking>` and `</thinking>` while output necessary keywords from the text in JSON with key 'text_keywords'. Then, based on the thinking contents, rethink between `<rethink>` and `</rethink>`. Finally, output the answer within `<answer>...</answer>`.\n"
    '6.  Your thought process should adapt to the task type:\n'
    '    *   For **caption-based retrieval** (e.g., find image from caption): Extract key visual elements, objects, scenes, and relationships.\n'
    '    *   For **news retrieval** (e.g., find news image from headline): Identify key people, locations, events, and contextual elements.\n'
    '    *   For **dialogue-based retrieval** (e.g., find image from conversation): Summarize visual attributes, actions, and scene details.\n'
    '    *   For **question-based retrieval** (e.g., find factual image): Identify the key concepts and relationships.\n'
    '\n'
    '**Example :**\n'
    'QUESTION: Represent the provided dialogue related to an image for the purpose of image retrieval: Q:is this a child or adult A:adult Q:male or female A:male Q:are they inside or outside A:inside Q:are they laying on the floor A:yes, but there is a blanket in between them and the floor Q:is the floor carpeted or wooden A:it is tile Q:what color is the blanket A:red and white Q:what color is the tile A:orange red Q:what breed is the dog A:boxer Q:does the dog look healthy and happy A:yes Q:what color is the dog A:tan\n'
    'ANSWER:\n'
    '<thinking>The dialogue describes an adult male lying on a tile floor with a red and white blanket underneath. There\'s also a tan boxer dog that looks healthy and happy. The scene is indoors. {{"text_keywords": ["adult male", "lying on floor", "tile floor", "red and white blanket", "tan boxer dog", "healthy dog", "indoors"]}}</thinking>\n'
    '<rethink>The keywords indicate we need an image showing a man lying on a tile floor with a blanket, accompanied by a tan boxer dog in an indoor setting.</rethink>\n'
    '<answer>An image of an adult male lying on a tile floor with a red and white blanket, accompanied by a tan boxer dog in an indoor environment.</answer>\n'
    '\n'
    '**Example :**\n'
    'QUESTION: Based on the provided <|image_1|>, search for a Wikipedia image that answers the question: Which body part is found on both a 1913 D Barber half and a 1914 Barber Quarter?\n'
    'ANSWER:\n'
    '<thinking>The question asks about a body part common to two specific coins: the 1913 D Barber half and the 1914 Barber Quarter. These are US coins featuring a design with a head/profile. The body part would likely be the head or face. {{"text_keywords": ["1913 D Barber half", "1914 Barber Quarter", "US coins", "body part", "head", "profile", "coin design"]}}</thinking>\n'
    '<rethink>The keywords suggest we need an image showing the head/profile design common to both Barber coins.</rethink>\n'
    '<answer>An image showing the head or profile design featured on both the 1913 D Barber half dollar and the 1914 Barber Quarter.</answer>\n'
    '\n'
    'Now, process the following input:\n'
    'TASK/QUESTION: {question}\n'
    '\n'
    'Follow the specified format for your response. Analyze the text and task/question to determine the appropriate image description.'
)

PROMPT_IMAGE_WITHOUT_ANSWER = (
    'You are a visual reasoning assistant. Given an image and a task description or question, analyze the image step-by-step to produce the required output. The task may involve image retrieval, classification, question answering, or object identification.\n'
    '\n'
    '**Rules:**\n'
    '1.  Keep reasoning concise and grounded in visual evidence. Limit each step to 1-2 sentences.\n'
    '2.  Base your reasoning solely on the visual content of the image and the task description.\n'
    '3.  Rephrase the final answer to preserve its exact meaning, changing only wording/phrasing if needed.\n'
    "4.  In your thinking process, you must output coordinates for the key visual element(s) relevant to answering the question (do not use the entire image as a bounding box). Use JSON format with key 'bbox_2d' to specify the bounding box as [x1, y1, x2, y2]. For multiple elements, use a list of bboxes: [[x1, y1, x2, y2], [x1, y1, x2, y2]].\n"
    "5.  First, think between `<thinking>` and `</thinking>` while output necessary coordinates needed to answer the question in JSON with key 'bbox_2d'. Then, based on the thinking contents and coordinates, rethink between `<rethink>` and `</rethink>`. Finally, output the answer within `<answer>...</answer>`.\n"
    '6.  Your thought process should adapt to the task:\n'
    '    *   For **retrieval** (e.g., find similar image): Identify and locate key visual elements that define the match.\n'
    '    *   For **classification** (e.g., scene, object, domain): Locate distinguishing visual features that belong to the class.\n'
    '    *   For **question answering**: Locate the visual or textual clues in the image that lead to the answer.\n'
    "    *   For **object identification/segmentation**: Provide the object's location and boundaries.\n"
    '\n'
    '**Example :**\n'
    'QUESTION: What animal is prominently featured in the center of the image?\n'
    'ANSWER:\n'
    '<thinking>The image shows a large brown bear standing in a forest clearing at coordinates [220, 150, 380, 320]. The bear is the central subject of the image. {{"bbox_2d": [220, 150, 380, 320]}}</thinking>\n'
    "<rethink>The coordinates confirm the bear's central position and prominent size in the image.</rethink>\n"
    '<answer>A brown bear is prominently featured in the center of the image.</answer>\n'
    '\n'
    '**Example :**\n'
    'QUESTION: Identify both vehicles visible in the street scene.\n'
    'ANSWER:\n'
    '<thinking>The image shows a red car at coordinates [120, 200, 280, 280] and a blue truck at coordinates [320, 180, 480, 300]. Both vehicles are on the same street. {{"bbox_2d": [[120, 200, 280, 280], [320, 180, 480, 300]]}}</thinking>\n'
    '<rethink>The two bounding boxes correspond to the red car and the blue truck, both clearly visible in the street scene.</rethink>\n'
    '<answer>The street scene contains a red car and a blue truck.</answer>\n'
    '\n'
    'Now, process the following input:\n'
    'TASK/QUESTION: {question}\n'
    '\n'
    'Analyze the PROVIDED IMAGE (not just the metadata) to complete the task.'
)

PROMPT_VIDEO_WITHOUT_ANSWER = (
    'You are a video reasoning assistant. Given a video sequence (multiple frames) and a task description, analyze the video content step-by-step to produce the required output. The task may involve video captioning, video question answering, or video retrieval.\n'
    '\n'
    '**Rules:**\n'
    '1.  Keep reasoning concise and grounded in visual evidence from the video frames. Limit each step to 1-2 sentences.\n'
    '2.  Base your reasoning solely on the visual content of the video frames and the task description.\n'
    '3.  Rephrase the final answer to preserve its exact meaning, changing only wording/phrasing if needed.\n'
    "4.  In your thinking process, you must identify and output key frames from the video sequence that are most relevant to answering the question. Use JSON format with key 'key_frames' to specify the frame indices as a list (using 1-based indexing).\n"
    "5.  First, think between `<thinking>` and `</thinking>` while output necessary key frame indices in JSON with key 'key_frames'. Then, based on the thinking contents, rethink between `<rethink>` and `</rethink>`. Finally, output the answer within `<answer>...</answer>`.\n"
    '6.  Your thought process should adapt to the task type:\n'
    '    *   For **video captioning/description**: Identify frames that show main events, transitions, or key moments in the video sequence.\n'
    '    *   For **video question answering**: Locate frames that contain the visual evidence needed to answer the specific question.\n'
    '    *   For **video retrieval**: Identify frames that represent the core content or distinguishing features of the video.\n'
    '\n'
    '**Example :**\n'
    "QUESTION: Provide a comprehensive analysis of the video's content and themes.\n"
    'ANSWER:\n'
    '<thinking>The video shows a cooking process. Frame 1 shows water boiling in a pot. Frame 4 shows a hand adding noodles to the pot. Frame 8 shows children eating the cooked noodles. These frames capture the beginning, middle, and end of the cooking process. {{"key_frames": [1, 4, 8]}}</thinking>\n'
    '<rethink>The key frames (1, 4, 8) represent the main stages: preparation, cooking, and consumption of the noodles.</rethink>\n'
    '<answer>The video depicts the process of preparing instant noodles, starting with boiling water, adding and cooking the noodles, and ending with children enjoying the meal.</answer>\n'
    '\n'
    '**Example :**\n'
    'QUESTION: How would you describe the design of the architectural structure in the video?\n'
    'ANSWER:\n'
    '<thinking>The video shows an unusual building. Frame 3 clearly displays the structure\'s tilted and angular design. Frame 6 shows another angle of the same structure. {{"key_frames": [3, 6]}}</thinking>\n'
    '<rethink>Frames 3 and 6 show the architectural structure from different angles, both revealing its non-conventional design.</rethink>\n'
    '<answer>The architectural structure has a tilted and angular design that deviates from traditional building structures.</answer>\n'
    '\n'
    'Now, process the following input:\n'
    'VIDEO FRAMES: {video}\n'
    'TASK/QUESTION: {question}\n'
    '\n'
    'Follow the specified format for your response. Analyze the video frames and task/question to determine the appropriate answer.'
)

PROMPT_VIDEO_RETRIEVAL_WITHOUT_ANSWER = (
    'You are a visual reasoning assistant specialized in text-to-video retrieval. Given a video description and a task, analyze the text content to determine the key visual concepts needed for retrieving matching video clips or keyframes.\n'
    '\n'
    '**Rules:**\n'
    '1.  Keep reasoning concise and grounded in textual evidence. Limit each step to 1-2 sentences.\n'
    '2.  Base your reasoning solely on the textual content and the task description.\n'
    '3.  Rephrase the final answer to preserve its exact meaning, changing only wording/phrasing if needed.\n'
    "4.  In your thinking process, you must extract and output key visual concepts from the text description. Use JSON format with key 'text_keywords' to specify the important keywords as a list.\n"
    "5.  First, think between `<thinking>` and `</thinking>` while output necessary keywords from the text in JSON with key 'text_keywords'. Then, based on the thinking contents, rethink between `<rethink>` and `</rethink>`. Finally, output the answer within `<answer>...</answer>`.\n"
    '6.  Your thought process should adapt to the task type:\n'
    '    *   For **video-based retrieval** (e.g., find video from description): Extract key visual elements, objects, scenes, actions, temporal sequences, and relationships.\n'
    '    *   For **scene-based retrieval** (e.g., find video from scene description): Identify key people, locations, events, contextual elements, and temporal progression.\n'
    '    *   For **action-based retrieval** (e.g., find video from action sequence): Summarize visual attributes, actions, scene details, and temporal dynamics.\n'
    '\n'
    '**Example :**\n'
    'QUESTION: Represent the provided video description for the purpose of video retrieval: The video opens with a shot of an individual in an orange safety suit and a white helmet, performing cleaning or maintenance duties on a stairway of the vessel. The railing is yellow, and the flooring consists of metal grates. The surrounding area has a bright green deck, and the water is visible to the side, indicating that the vessel is either docked or stationed at sea. Subsequent scenes shift to different parts of the ship, where other crew members can be seen wearing similar safety gear. The deck is consistently green with yellow railings, and the infrastructure includes various industrial components such as pipes, storage tanks, ladders, and safety signage.\n'
    'ANSWER:\n'
    '<thinking>The video description depicts a maritime industrial environment with crew performing maintenance. Key elements include individuals in orange safety suits and white helmets, a ship with yellow railings and metal grate stairway, bright green deck, visible water, and various industrial components like pipes, storage tanks, ladders, and safety signage. {{"text_keywords": ["orange safety suit", "white helmet", "cleaning/maintenance", "ship stairway", "yellow railing", "metal grate flooring", "green deck", "visible water", "crew members", "maritime industrial", "pipes", "storage tanks", "ladders", "safety signage"]}}</thinking>\n'
    '<rethink>The keywords suggest we need a video showing maintenance activities on an industrial ship, with crew in distinctive safety gear, featuring specific colors (orange, white, yellow, green) and industrial infrastructure.</rethink>\n'
    '<answer>A video depicting crew members in orange safety suits and white helmets performing maintenance on an industrial ship with green deck, yellow railings, and various industrial components.</answer>\n'
    '\n'
    'Now, process the following input:\n'
    'TASK/QUESTION: {question}\n'
    '\n'
    'Follow the specified format for your response. Analyze the text and task/question to determine the appropriate video description.'
)

PROMPT_POS_TEXT = (
    'You are a visual reasoning assistant. Given a task description and a positive text output, analyze the text to determine the key concepts that make it the correct output.\n'
    '\n'
    '**Rules:**\n'
    '1. Keep reasoning concise and grounded in the textual evidence. Limit each step to 1-2 sentences.\n'
    '2. Use the task description to understand the context of the output.\n'
    "3. In your thinking process, you must extract and output key concepts from the text. Use JSON format with key 'text_keywords' to specify the important keywords as a list.\n"
    "4. First, think between `<thinking>` and `</thinking>` while output necessary keywords from the text in JSON with key 'text_keywords'. Then, based on the thinking contents, rethink between `<rethink>` and `</rethink>`. Finally, output a brief description of the text within `<answer>...</answer>`.\n"
    '\n'
    '**Example:**\n'
    'TASK INFO: Retrieve the corresponding text.\n'
    'POSITIVE TEXT OUTPUT: 1/8/93\n'
    'ANSWER:\n'
    '<thinking>The task is to answer a question about a date in a document. The positive text output is "1/8/93", which represents a date. Key concepts include the date format and the specific numbers. {{"text_keywords": ["1/8/93", "date", "January 8, 1993"]}}</thinking>\n'
    '<rethink>The keywords indicate that the answer is a date in a specific format, which is likely found in a document.</rethink>\n'
    '<answer>The text output is the date January 8, 1993.</answer>\n'
    '\n'
    'Now, process the following input:\n'
    'POSITIVE TEXT OUTPUT: {pos_text}\n'
    '\n'
    'Follow the specified format for your response.'
)

PROMPT_POS_IMAGE = (
    'You are a visual reasoning assistant. Given a task description and a positive image output (with optional text template), analyze the task to determine what the image should contain and locate key regions.\n'
    '\n'
    '**Rules:**\n'
    '1. Keep reasoning concise and grounded in the task description. Limit each step to 1-2 sentences.\n'
    '2. Use the task description to infer what the target image should look like.\n'
    "3. In your thinking process, you must output coordinates for the key visual element(s) relevant to answering the question. If no question is specified, output the most important element. Use JSON format with key 'bbox_2d' to specify the bounding box as [x1, y1, x2, y2]. For multiple elements, use a list of bboxes: [[x1, y1, x2, y2], [x1, y1, x2, y2]].\n"
    "4. First, think between `<thinking>` and `</thinking>` while output necessary coordinates in JSON with key 'bbox_2d'. Then, based on the thinking contents, rethink between `<rethink>` and `</rethink>`. Finally, output a brief description of the image within `<answer>...</answer>`.\n"
    '\n'
    '**Example:**\n'
    'TASK INFO: Retrieve the corresponding image.\n'
    'POSITIVE TEXT OUTPUT: An image of a shop featuring teddy bears, with one placed as a door guard and another positioned above it.\n'
    'ANSWER:\n'
    '<thinking>The task is to retrieve an image matching the description of a teddy bear shop. The description specifies two key teddy bears: one acting as a "door guard" (likely at the base of a doorway) and another positioned directly above it. To pinpoint these elements, I should place a bounding box around the area where the "door guard" teddy bear is located, as it\'s a specific positional landmark. {{"bbox_2d": [280, 350, 360, 430]}}</thinking>\n'
    '<rethink>The bounding box focuses on the described "door guard" teddy bear, which is a critical and specific visual anchor in the scene. The presence of the second bear above it would be inferred from the overall image context.</rethink>\n'
    '<answer>The image should show a teddy bear shop with a door guard teddy and a neighbor teddy above.</answer>\n'
    '\n'
    'QUESTION: Locate the sink and the refrigerator in the kitchen image.\n'
    'ANSWER:\n'
    '<thinking>The image depicts a modern kitchen. A stainless steel kitchen sink is installed on the left countertop, and a large silver refrigerator stands on the right side. I need to identify both objects. The sink is at coordinates [80, 200, 240, 320], and the refrigerator is at [350, 150, 520, 380]. {{"bbox_2d": [[80, 200, 240, 320], [350, 150, 520, 380]]}}</thinking>\n'
    '<rethinking>The two bounding boxes correctly correspond to the sink (left) and the refrigerator (right), both clearly visible and distinct in the kitchen layout.</rethinking>\n'
    '<answer>The sink is on the left countertop, and the refrigerator is on the right side of the kitchen.</answer>\n'
    '\n'
    '\n'
    'Now, process the following input:\n'
    'POSITIVE TEXT OUTPUT: {pos_text}\n'
    'POSITIVE IMAGE OUTPUT: {pos_image_description} \n'
    '\n'
    'Analyze the PROVIDED IMAGE (not just the metadata) to complete the task.'
)

PROMPT_POS_VIDEO_RETRIEVAL = (
    'You are a visual reasoning assistant for video. Given a task description and a set of video frames (provided as image inputs), analyze the video frames to determine the key moments or concepts that make it the correct output for the task.\n'
    '\n'
    '**Rules:**\n'
    '1.  Keep reasoning concise and grounded in the VISUAL EVIDENCE from the provided video frames. Limit each step to 1-2 sentences.\n'
    '2.  Use the task description to understand the context of the output.\n'
    "3.  In your thinking process, you must identify and output the indices of the most relevant or representative frames from the video sequence (using 1-based indexing). Use JSON format with key 'key_frames' to specify the frame indices as a list.\n"
    "4.  First, think between `<thinking>` and `</thinking>` while outputting necessary key frame indices in JSON with key 'key_frames'. Then, based on the thinking contents, rethink between `<rethink>` and `</rethink>`. Finally, output a brief analysis of the video content within `<answer>...</answer>`.\n"
    '\n'
    '**Example:**\n'
    'TASK INFO: Provide an exhaustive description of the video content.\n'
    'VIDEO FRAMES: 8 frames at 2.0 FPS (industrial ship maintenance scene)\n'
    '\n'
    'ANSWER:\n'
    '<thinking>The video frames show crew members in orange safety suits performing maintenance on a ship\'s stairway with yellow railings. Frame 1 shows the stairway and safety gear, Frame 3 shows close-up of metal grates, Frame 5 shows green deck and water, Frame 7 shows industrial pipes/tanks. These frames capture the core visual elements. {{"key_frames": [1, 3, 5, 7]}}</thinking>\n'
    '<rethink>The key frames (1, 3, 5, 7) highlight the main setting (ship stairway) and key details (safety gear, industrial infrastructure, marine environment).</rethink>\n'
    '<answer>The video shows crew in orange safety suits performing maintenance on a ship with yellow railings, green deck, and industrial components like pipes and storage tanks, with water visible in the background.</answer>\n'
    '\n'
    'Now, process the following input:\n'
    'TASK DESCRIPTION: {pos_text}\n'
    'VIDEO FRAMES: {pos_video_output}\n'
    '\n'
    'Analyze the PROVIDED VIDEO FRAMES (not just the metadata) to complete the task.'
)
